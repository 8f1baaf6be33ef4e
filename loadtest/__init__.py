"""Load tests and benchmarks: the figures in BENCHMARKS.md come from here."""
