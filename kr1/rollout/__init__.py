"""Pure rollout: the tag protocol, episodes and the multi-turn loop, the generation backends, rewards.

No Ray and no actor here: the rollout engine and reward scorer actors (actors/) call these.
"""
