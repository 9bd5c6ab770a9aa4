"""Ray roles, one file each, thin shells over kr1's pure layers: retriever shards, rollout engines,
learner ranks, reference workers, the reward scorer. They import neither pipelines/, kr1.run,
kr1.bench nor a command.
"""
