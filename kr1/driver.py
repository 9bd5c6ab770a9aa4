"""Train a model to search and answer with GRPO: the driver loop.

    python -m kr1.driver                                         # embedded default, on this machine
    python -m kr1.driver --config 2wiki_qwen2.5_7b_instruct trainer.total_steps=200
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m kr1.driver ...

Each step: rollout -> reward and reference log-probs (in parallel) -> advantages ->
update -> weight sync -> (evaluate) -> log -> checkpoint. The starting policy is evaluated
on the dev split first, and the end prints its table beside the trained policy's. TensorBoard scalars go to
<trainer.output_dir>/tensorboard, checkpoints to <trainer.output_dir>/checkpoints;
`trainer.resume=true` continues from the latest complete checkpoint.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import ray

from kr1.batch import TrainBatch
from kr1.config import Config, load_config
from kr1.run_logger import PhaseTimer
from kr1.training_run import TrainingRun


def train(cfg: Config, quiet: bool = False) -> list[dict[str, float]]:
    """Run `trainer.total_steps` steps (from the checkpoint when resuming); returns each step's metrics."""
    run = TrainingRun(cfg, quiet=quiet)
    timer, history = PhaseTimer(), []
    try:
        before = run.evaluate_start()
        for step in range(run.start_step, cfg.trainer.total_steps):
            with timer("rollout"):
                episodes = run.rollout(step)
            with timer("score_and_ref"):
                pending_scores = run.score(episodes)  # the reward actor works while the reference runs
                batch = run.ref_logprobs(TrainBatch.from_episodes(episodes, run.pad_id))
                scores = ray.get(pending_scores)
            batch = run.advantages(batch, scores)
            with timer("update"):
                train_metrics = run.update(batch)
            with timer("sync_weights"):
                run.sync_weights()
            with timer("evaluate"):
                eval_metrics = run.evaluate(step)
            history.append(run.log(step, episodes, batch, scores, train_metrics, eval_metrics, timer.pop()))
            with timer("checkpoint"):  # its time shows in the next step's time/checkpoint
                run.checkpoint(step)
        if not quiet:
            run.report(before, {k: v for k, v in (history[-1] if history else {}).items() if k.startswith("eval/")})
    finally:
        run.close()
    return history


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="default", help="bundled config name or YAML path")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    train(load_config(args.config, args.overrides))


if __name__ == "__main__":
    from kr1.cli_errors import run_cli

    run_cli(main)
