"""Offline jobs as commands (`python -m pipelines.X`): synthetic world, datasets, BM25 indexes, the tiny
model's bootstrap, run plots. Each is a thin main (argparse, then kr1 functions, under `run_cli`); the
library they call lives in kr1/. They import neither actors/, kr1.bench, a command nor each other.
"""
