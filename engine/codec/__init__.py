"""melvq: the project's dual-codebook speech codec (vq02 16.7 Hz / 1024 codes, vq06 25 Hz / 4096).

    from engine.codec import load_codec
    ids = load_codec().tokenize(wav16k)
    codec = load_codec("stepaudio:MODEL_PATH")   # the released Step-Audio stack (engine.stepaudio)
    ids = tokenize_audio(codec, wav, sample_rate)   # either codec, its own preprocessing
"""
from .codec import MelVQCodec, absolute_spec, from_file, load_codec, tokenize_audio
from .kmeans import assign, kmeans

__all__ = ["MelVQCodec", "absolute_spec", "assign", "from_file", "kmeans", "load_codec", "tokenize_audio"]
