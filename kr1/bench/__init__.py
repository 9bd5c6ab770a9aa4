"""Benchmarks behind `python -m kr1.bench` (the command is kr1/bench/__main__.py): rollout batching,
retrieval, learner memory, step breakdown and overlap, each a module returning table rows.
"""
