"""Fused kernels (Triton on CUDA), each beside the plain PyTorch reference it must match.

Each public function picks its implementation with :func:`kernels.backend.pick`; force one with
``use_backend("triton" | "reference")`` or ``STEPFORGE_KERNELS``.
"""
from kernels.backend import pick, triton_available, use_backend

__all__ = ["pick", "triton_available", "use_backend"]
