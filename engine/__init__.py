"""stepforge engine."""
