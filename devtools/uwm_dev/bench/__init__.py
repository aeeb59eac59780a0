"""Benchmarks of the operator: the critical path a plan could take, measured runs (bench/ at the top)."""
