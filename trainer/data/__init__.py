"""Readers of the data the trainer learns from, and the errors they raise on malformed input."""
