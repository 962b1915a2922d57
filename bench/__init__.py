"""Benchmarks (not tests), each runnable as `python -m bench.<name>`; see bench/README.md."""
