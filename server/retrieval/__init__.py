"""Candidate retrieval: the real-time sources a recommendation starts from."""
