"""stepforge filters."""
