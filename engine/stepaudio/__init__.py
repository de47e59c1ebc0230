"""``stepaudio``: independent loaders for the released Step-Audio speech stack.

Step-Audio-Tokenizer (vq02 streaming Paraformer + k-means, vq06 ONNX, the 2:3 merge), the
CosyVoice-300M-25Hz decoders (flow matching + HiFT) and the Step-Audio-TTS-3B prompt layout,
read from the checkpoint files as released. No upstream code is vendored or imported.
"""
