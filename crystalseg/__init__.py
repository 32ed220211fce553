"""crystalseg."""
