"""The training loop: one screen, each step a named call on a `TrainingRun`.

    history = train(load_config("default", ["trainer.total_steps=3"]))   # what `python -m kr1.driver` runs

Each step: rollout -> reward and reference log-probs (in parallel) -> advantages ->
update -> weight sync -> (evaluate) -> log -> watch the stability monitors ->
checkpoint. With trainer.mode=async the rollout step takes episodes the engines played while
the learner trained on earlier steps (kr1/run/rollout_queue.py), and the weight sync does not
wait for the engines. The starting policy is evaluated on the dev split first, and the end
prints its table beside the trained policy's. What each step does, and how the pools start,
resume and recover from a dead learner or reference worker, is in kr1/run/training_run.py.
"""

from __future__ import annotations

import sys

import ray

from kr1.config import Config
from kr1.run.curves import plot
from kr1.run.run_logger import PhaseTimer
from kr1.run.run_state import recover
from kr1.run.training_run import TrainingRun


def train(cfg: Config, quiet: bool = False) -> list[dict[str, float]]:
    """Run `trainer.total_steps` steps (from the checkpoint when resuming); returns each step's metrics."""
    run = TrainingRun(cfg, quiet=quiet)
    try:
        history = run_steps(run, quiet)
    finally:
        run.close()
    if history:  # after close: every scalar is on disk (a resumed run with no step left keeps its figure)
        figure = plot(run.output_dir, run.output_dir / "curves.png")
        if not quiet:
            print(f"curves: {figure} (tensorboard --logdir {run.output_dir / 'tensorboard'})")
    return history


def run_steps(run: TrainingRun, quiet: bool = False) -> list[dict[str, float]]:
    """The loop over a started run's pools (left running, for callers that measure them afterwards)."""
    timer, history = PhaseTimer(), []
    before = run.evaluate_start()
    step = run.start_step
    while step < run.cfg.trainer.total_steps:
        try:
            metrics, stop = one_step(run, step, timer)
            history.append(metrics)
            step += 1
            if stop:  # trainer.stop_on_collapse: the step was checkpointed
                print(f"stopped after step {step} (trainer.stop_on_collapse): {stop.text}", file=sys.stderr)
                break
        except ray.exceptions.RayError as error:  # a learner or reference worker died: rebuilt, the step redone
            step = recover(run, error, step)
            del history[max(0, step - run.start_step):]
            timer.pop()
    if not quiet:
        last = history[-1] if history else {}
        run.report(before, {k: v for k, v in last.items() if k.startswith(("eval/", "closed_book/"))})
    return history


def one_step(run: TrainingRun, step: int, timer: PhaseTimer) -> tuple[dict[str, float], object | None]:
    """rollout -> reward || reference -> advantages -> update -> sync -> evaluate -> log -> checkpoint; returns
    the step's metrics and the stability monitor's stop reason (trainer.stop_on_collapse) or None."""
    with timer("rollout"):
        rollout = run.rollout(step)
    with timer("score_and_ref"):
        pending_scores = run.score(rollout)  # the reward actor works while the reference runs
        batch = run.ref_logprobs(run.train_batch(rollout), rollout)
        scores = ray.get(pending_scores)
    batch = run.advantages(batch, scores, rollout.episodes)
    with timer("update"):
        train_metrics = run.update(batch, step)
    with timer("sync_weights"):
        run.sync_weights()
    with timer("evaluate"):
        eval_metrics = run.evaluate(step)
    metrics = run.log(step, rollout, batch, scores, train_metrics, eval_metrics, timer.pop())
    stop = run.watch(step, metrics)
    with timer("checkpoint"):  # its time shows in the next step's time/checkpoint
        run.checkpoint(step, stopping=stop is not None)
    return metrics, stop
