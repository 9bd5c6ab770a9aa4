"""Orchestration: the training run that starts the actor pools, the loop, assets, logging, metrics,
and the evaluation loop.

The only part of kr1 that imports actors/ (nothing in kr1 imports pipelines/); the commands at kr1/ top
level and in pipelines/ are thin mains over it.
"""
