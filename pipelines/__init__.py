"""Offline jobs over kr1's pure layers: synthetic world, datasets, BM25 indexes, the tiny model's
bootstrap, run plots. They import neither actors/, kr1.run, kr1.bench nor a command.
"""
