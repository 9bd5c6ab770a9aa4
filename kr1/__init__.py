"""kr1: Knowledge-R1, Ray-native RL for language models that reason with a search engine.

Layers (tests/test_layers.py keeps them true):
  commands   driver, eval, search, plan, coverage, serve, bench: thin mains, imported by nothing
  shared     config, config_checks, data, benchmarks, two_wiki, errors, atomic_write, logprobs (pure),
             cluster (starts or joins Ray)
  pure       retrieval/ < rollout/ < training/, and world/: no Ray, no actors, no pipelines, none imports a higher one
  run/       orchestration: the only kr1 code that imports actors/
  bench/     benchmarks over run/ and the pure layers
Nothing in kr1 imports pipelines/: the library is here, pipelines/ holds thin command-line mains over it.
"""

__version__ = "0.1.0"
