"""Benchmarks: one folder per stage of stzarr, all run through :mod:`benchmarks.harness`."""
