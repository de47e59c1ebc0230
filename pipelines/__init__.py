"""stepforge pipelines."""
