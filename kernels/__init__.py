"""Fused kernels (Triton on CUDA), each beside the plain PyTorch reference it must match.

Each public function picks its implementation with :func:`kernels.backend.pick`; force one with
``use_backend("triton" | "reference")`` or ``STEPFORGE_KERNELS``.
"""
from kernels.alibi_attention import alibi_attention, alibi_attention_reference
from kernels.backend import pick, triton_available, use_backend
from kernels.restricted_ce import HeadRanges, RestrictedCE, restricted_linear_ce
from kernels.vq import assign_codes, assign_codes_reference

__all__ = ["HeadRanges", "RestrictedCE", "alibi_attention", "alibi_attention_reference",
           "assign_codes", "assign_codes_reference", "pick", "restricted_linear_ce",
           "triton_available", "use_backend"]
