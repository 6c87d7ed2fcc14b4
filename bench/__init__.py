"""Benchmarks of the running API beside a floor measured in the same run (`make bench-*`)."""
