"""Pure training: the training batch, token-budget micro-batches, advantages and losses, the policy
update, the sharded model, the warm start and the tiny model's bootstrap, checkpoint files, and the GPU
memory plan's arithmetic.

Torch only, no Ray and no actor: the learner and reference actors (actors/) call these, and so
do tests and the GPU checks without Ray.
"""
