"""Benchmarks of inference."""
