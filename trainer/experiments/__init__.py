"""Experiment analysis from the lake (`report`), and the simulator that checks it against a live server
(`simulate`)."""
