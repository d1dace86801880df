"""Benchmarks of training (model speed, accuracy, DDP scaling, partitioned parity)."""
