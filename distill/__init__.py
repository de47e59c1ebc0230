"""stepforge distill."""
