"""stepforge kernels."""
