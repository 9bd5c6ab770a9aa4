"""The embedded default's fictional world: names (names.py), the world's corpus and questions (synthetic.py),
and its questions in FlashRAG's benchmark layout (flashrag_files.py).

Pure like retrieval/, rollout/ and training/: no Ray, actors, pipelines or kr1.run. `python -m
pipelines.synthetic_world` and `python -m pipelines.synthetic_benchmarks` are thin mains over it.
"""
