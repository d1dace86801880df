"""Benchmarks of the data layer (loader throughput, peak memory)."""
