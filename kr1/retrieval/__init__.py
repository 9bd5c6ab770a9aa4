"""Pure retrieval: the sharded BM25 index format and its build steps, the scoring kernel, hits and their merge.

No Ray and no actor here: the retriever actors (actors/retriever.py) and the index build's Ray fan-out
(kr1/run/index_build.py, behind `python -m pipelines.build_index`) are thin shells over these functions.
"""
