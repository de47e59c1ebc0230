"""stepforge engine/teachers."""
