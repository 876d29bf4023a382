"""Benchmarks of the notebook: `python -m benchmarks.benchmark`, `.budgets`, `.explore`."""
