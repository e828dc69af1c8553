"""Benchmarks that print figures and their ratios to a baseline measured in the same run.

Run each from the repository root as ``python -m bench.NAME``.
"""
