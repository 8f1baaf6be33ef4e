"""Experiments: variants as serving configurations, sticky assignment, interleaving, exposure logging."""
