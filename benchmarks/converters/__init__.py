"""Benchmarks of the converters."""
