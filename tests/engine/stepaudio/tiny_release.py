"""A whole tiny Step-Audio release in upstream's "model path" layout, from a seed.

    root = write_tiny_release(tmp / "step-audio", seed=0)
    codec = StepAudioCodec.from_spec(f"stepaudio:{root}")
    teacher = f"torch:{root}/Step-Audio-TTS-3B"

``root/Step-Audio-Tokenizer/`` (Paraformer, centroids, vq06 ONNX) and ``root/Step-Audio-TTS-3B/``
(tokenizer.model, a tiny Step1ForCausalLM with the full 74752-id vocabulary, and both decoder dirs
CosyVoice-300M-25Hz and CosyVoice-300M-25Hz-Music with cosyvoice.yaml, flow.pt, hift.pt,
campplus.onnx), every file as the released one is named and shaped, with tiny random weights.
"""
from __future__ import annotations

from pathlib import Path

from engine.stepaudio import layout
from tests.engine.stepaudio.tiny_campplus import write_tiny_campplus
from tests.engine.stepaudio.tiny_flow import write_tiny_flow
from tests.engine.stepaudio.tiny_hift import write_tiny_hift
from tests.engine.stepaudio.tiny_paraformer import write_tiny_tokenizer_vq02
from tests.engine.stepaudio.tiny_tts3b import write_tiny_tts3b
from tests.engine.stepaudio.tiny_vq06 import write_tiny_vq06_onnx


def write_tiny_release(root, seed: int = 0, lm_weights: bool = True) -> Path:
    """Write the release under ``root`` (created) and return it.

    Args:
        lm_weights: write the tiny Step1 weights (False: only the text tokenizer and config,
            enough for a codec).
    """
    root = Path(root)
    tok = write_tiny_tokenizer_vq02(root, seed=seed)
    write_tiny_vq06_onnx(tok / "speech_tokenizer_v1.onnx", seed=seed)
    tts = write_tiny_tts3b(root / layout.TTS_NAME, seed=seed, weights=lm_weights)
    for i, name in enumerate((layout.COMMON_NAME, layout.MUSIC_NAME)):
        section = write_tiny_hift(tts / name, seed=seed + 10 * i)
        write_tiny_flow(tts / name, seed=seed + 10 * i, hift=section)
        write_tiny_campplus(tts / name / "campplus.onnx", seed=seed + 10 * i)
    return root
