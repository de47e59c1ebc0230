"""melvq: the project's dual-codebook speech codec (vq02 16.7 Hz / 1024 codes, vq06 25 Hz / 4096).

    from engine.codec import load_codec
    ids = load_codec().tokenize(wav16k)
"""
from .codec import MelVQCodec, from_file, load_codec
from .kmeans import assign, kmeans

__all__ = ["MelVQCodec", "assign", "from_file", "kmeans", "load_codec"]
