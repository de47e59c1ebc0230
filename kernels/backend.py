"""Which implementation a kernel function runs: Triton on CUDA tensors, the PyTorch reference
elsewhere. Decided once per call from the tensors' device; tests force either side.

    from kernels import use_backend
    with use_backend("triton"):          # Triton on CPU too (with TRITON_INTERPRET=1)
        out = alibi_attention(q, k, v, slopes)

``STEPFORGE_KERNELS=reference|triton`` in the environment sets the default for a whole process.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch

BACKENDS = ("auto", "triton", "reference")
_state = threading.local()


def _forced() -> str:
    name = getattr(_state, "name", None) or os.environ.get("STEPFORGE_KERNELS", "auto")
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def pick(*tensors: torch.Tensor) -> str:
    """``"triton"`` or ``"reference"`` for a call on these tensors."""
    name = _forced()
    if name != "auto":
        if name == "triton" and not triton_available():
            raise RuntimeError("kernel backend 'triton' forced but triton is not installed "
                               "(pip install triton)")
        return name
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    return "triton" if on_cuda and triton_available() else "reference"


@contextlib.contextmanager
def use_backend(name: str):
    """Force ``name`` (``auto``, ``triton`` or ``reference``) for calls in this thread."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {', '.join(BACKENDS)}")
    old = getattr(_state, "name", None)
    _state.name = name
    try:
        yield
    finally:
        _state.name = old
