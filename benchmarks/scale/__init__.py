"""Benchmarks of PeMS-size and LargeST-size data."""
