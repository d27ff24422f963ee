"""Benchmarks of the bundle (not tests): ``python -m scripts.benchmark --help``."""
