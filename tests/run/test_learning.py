"""A small-scale version of the embedded default's run: GRPO must raise the reward.

Catches a silently broken gradient path (loss not reaching the weights, weights not reaching
the engines, advantages of the wrong sign): a handful of training questions, a few steps,
and the greedy reward on those same questions has to go up.
"""

from __future__ import annotations

import json

from kr1.config import load_config
from kr1.data import load_questions
from kr1.run.loop import train


def test_grpo_raises_the_reward_on_its_training_questions(ray_session, world_dir, index_factory, tiny_model,
                                                          tmp_path):
    questions = [q for q in load_questions(world_dir / "single_hop.jsonl") if q.id.endswith("0")][:6]
    subset = tmp_path / "train.jsonl"
    subset.write_text("".join(json.dumps(q.to_row()) + "\n" for q in questions))
    out = tmp_path / "run"
    overrides = {"data.train_path": subset, "data.dev_path": subset, "data.test_path": subset,
                 "retriever.index_dir": index_factory(2), "retriever.num_cpus_per_shard": 0.5,
                 "model.path": tiny_model, "trainer.output_dir": out, "trainer.total_steps": 16,
                 "trainer.prompts_per_step": 6, "rollout.n_samples": 8, "rollout.temperature": 0.7,
                 "trainer.eval_every": 16, "trainer.eval_prompts": 6, "trainer.checkpoint_every": 0,
                 "learner.lr": 1e-3, "reward.em_weight": 1.0, "reward.f1_weight": 1.0, "algorithm.kl_coef": 0.0}
    history = train(load_config("default", [f"{k}={v}" for k, v in overrides.items()]), quiet=True)
    rewards = [h["reward/mean"] for h in history]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.1, rewards
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    start, end = rows[0], rows[-1]
    assert start["step"] == 0 and end["step"] == 16
    assert end["eval/reward_mean"] > start["eval/reward_mean"], (start["eval/reward_mean"], end["eval/reward_mean"])
