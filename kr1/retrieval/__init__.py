"""Pure retrieval: the sharded BM25 index format and its build steps, the scoring kernel, hits and their merge.

No Ray and no actor here: the retriever actors (actors/retriever.py) and the index build job
(pipelines/build_index.py) are thin shells over these functions.
"""
