"""Benchmarks of the store (reads, checksums, codecs, manifests)."""
