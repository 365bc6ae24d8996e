"""The ablation study (``benchmarks/ablation.py``): cells, runs, report."""
