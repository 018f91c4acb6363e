"""Benchmarks that measure explainers against ground truth (`sage bench ...`)."""
