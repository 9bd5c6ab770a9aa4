"""Offline jobs that prepare inputs: synthetic world, datasets, BM25 indexes."""
