"""stepforge manifests."""
