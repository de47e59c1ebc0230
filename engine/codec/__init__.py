"""stepforge engine/codec."""
