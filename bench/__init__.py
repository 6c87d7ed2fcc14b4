"""Benchmarks of the running API: `python -m bench.decisions_latency` (also `make bench`)."""
