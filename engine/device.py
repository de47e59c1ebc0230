"""Where the models run: decided once per process.

    >>> "cuda" if has_cuda() else "cpu"      # doctest: +SKIP
    'cpu'
"""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def has_cuda() -> bool:
    """True when PyTorch is installed and sees a CUDA device (asked once, then cached)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()
