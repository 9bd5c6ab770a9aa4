"""Training-loop benchmarks: batched rollout, where a step's time goes, and what overlap buys.

    rows = rollout_rows(cfg, model_path, index_dir, questions)     # batched vs one episode at a time
    times = phase_times(overrides, steps=3, repeats=5)               # driver steps, then one run's phases
    rows = step_rows(times) + overlap_rows(times)

Part of `python -m kr1.bench`. The step breakdown reads the `time/*` metrics of real
`kr1.run.loop` steps. Retrieval inside the rollout, and reward and reference apart (they
overlap in the step), are timed on the same prompts right after those steps, in the same
`TrainingRun`; the rows that use them say "derived".
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import ray
import torch

from kr1.bench.table import Row, met
from kr1.config import Config, load_config
from kr1.data import QARecord
from kr1.rollout.episodes import RolloutSettings
from kr1.run.loop import one_step, run_steps
from kr1.run.run_logger import PhaseTimer
from kr1.run.pools import start_retriever
from kr1.run.rollout_queue import RolloutQueue
from kr1.run.step_rollout import AsyncRollouts, StepRollout, SyncRollouts
from kr1.run.training_run import TrainingRun

Progress = Callable[[str], None]


def rollout_rows(cfg: Config, model_path: str, index_dir: Path, questions: Sequence[QARecord],
                 progress: Progress = lambda s: None, backends: Sequence[str] = ("hf",)) -> list[Row]:
    """Generated tokens/s of all episodes in one batched rollout vs the same episodes one at a time: the
    turn loop on `hf`, and the agent loop on each of `backends`."""
    from kr1.bench.agent_loop import BenchEngine

    pool = start_retriever(cfg.retriever, index_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a rollout engine actor: Ray sets OMP_NUM_THREADS to its one CPU
    settings = RolloutSettings.from_config(cfg, greedy=True)  # greedy: both ways do the same work
    rows = []
    try:
        for backend, mode in [("hf", "turn")] + [(b, "agent") for b in backends]:
            engine = BenchEngine(backend, cfg, model_path, pool.search)
            try:
                def play(batch: Sequence[QARecord]) -> list[Any]:
                    if mode == "turn":
                        return engine.turn(batch, 1, settings, cfg.trainer.seed)
                    return engine.agent(batch, 1, settings, cfg.trainer.seed)

                play(questions[:2])  # warm-up
                progress(f"rollout: batch of {len(questions)} ({backend}, {mode} loop)")
                start = time.perf_counter()
                batched = play(questions)
                batched_s = time.perf_counter() - start
                progress(f"rollout: {len(questions)} one at a time ({backend}, {mode} loop)")
                start = time.perf_counter()
                single = [e for q in questions for e in play([q])]
                single_s = time.perf_counter() - start
            finally:
                engine.close()
            tokens_b, tokens_s = (sum(e.generated_tokens for e in eps) for eps in (batched, single))
            rate_b, rate_s = tokens_b / batched_s, tokens_s / single_s
            same = sum(a.response_ids == b.response_ids for a, b in zip(batched, single))
            n = len(questions)
            rows.append(Row("rollout batching", f"batch {n} vs 1 at a time ({backend}, {mode} loop, greedy, "
                            f"{cfg.rollout.max_turns} turns)", f"{rate_b:,.0f} tok/s", f"{rate_s:,.0f} tok/s",
                            rate_b / rate_s, ">= 10x at batch 64", met(rate_b / rate_s >= 10) if n == 64 else "-",
                            f"generated tokens {tokens_b:,} vs {tokens_s:,} ({same}/{n} episodes identical); "
                            f"{batched_s:.1f}s vs {single_s:.1f}s; 1 torch thread, as an engine actor; retrieval "
                            "pool included"))
    finally:
        torch.set_num_threads(threads)
        pool.close()
    return rows


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def step_mode_rows(overrides: Sequence[str], steps: int, backends: Sequence[str] = ("hf",),
                   progress: Progress = lambda s: None) -> list[Row]:
    """Driver step and rollout time of the default config: the turn loop on hf (before) against the agent
    loop on each backend (same seeds and prompts)."""
    times = {}
    for backend, mode in [("hf", "turn")] + [(b, "agent") for b in backends]:
        progress(f"step: {steps} driver steps, {backend}, rollout.mode={mode}")
        with tempfile.TemporaryDirectory(prefix="kr1-bench-") as tmp:
            run = TrainingRun(load_config("default", [
                *overrides, f"rollout.backend={backend}", f"rollout.mode={mode}", f"trainer.total_steps={steps}",
                "trainer.eval_every=0", "trainer.checkpoint_every=0", f"trainer.output_dir={tmp}"]), quiet=True)
            try:
                kept = run_steps(run, quiet=True)[1:]  # the first step also pays warm-ups
            finally:
                run.close()
        times[backend, mode] = {k: statistics.mean(h[k] for h in kept) for k in (
            "time/step", "time/rollout", "time/sync_weights", "throughput/rollout_tokens_per_s")}
    base = times["hf", "turn"]
    tps = "throughput/rollout_tokens_per_s"
    return [row for (backend, mode), t in times.items() if mode == "agent" for row in (
        Row("step time", f"step: {backend} agent loop vs hf turn loop", f"{t['time/step']:.2f} s",
            f"{base['time/step']:.2f} s", base["time/step"] / t["time/step"],
            notes=f"time/* of kr1.run.loop, mean of {steps - 1} steps after the first; ratio = before / after; "
            f"rollout {t['time/rollout']:.2f} s vs {base['time/rollout']:.2f} s; weight sync "
            f"{t['time/sync_weights']:.3f} s vs {base['time/sync_weights']:.3f} s"),
        Row("step time", f"rollout tokens/s in the driver: {backend} agent loop vs hf turn loop",
            f"{t[tps]:,.0f} tok/s", f"{base[tps]:,.0f} tok/s", t[tps] / base[tps],
            notes="engine actors, sampled episodes of the same prompts"))]


def phase_times(overrides: Sequence[str], steps: int, repeats: int, progress: Progress = lambda s: None,
                mode_steps: int = 0) -> dict[str, Any]:
    """Seconds per phase: `steps` driver steps of the default config with `overrides` (the mean of
    those after the first), then, in the same run, the same prompts again, timing retrieval, reward
    and reference apart, and the reward beside the reference vs one after the other. With `mode_steps`,
    then that many steps in each loop mode (`loop_mode_times`), under "modes"."""
    with tempfile.TemporaryDirectory(prefix="kr1-bench-") as tmp:
        progress(f"step: {steps} driver steps")
        total = steps + len(LOOP_MODES) * (mode_steps + 1)
        overrides = [*overrides, f"trainer.total_steps={total}", "trainer.eval_every=0", "trainer.checkpoint_every=0",
                     f"trainer.output_dir={tmp}"]
        run = TrainingRun(load_config("default", overrides), quiet=True)
        try:
            timer = PhaseTimer()
            history = [one_step(run, step, timer)[0] for step in range(steps)]
            kept = history[1:] or history  # the first step also pays warm-ups
            times = {k: statistics.mean(h.get(k, 0.0) for h in kept)
                     for k in ("time/step", "time/rollout", "time/score_and_ref", "time/update", "time/sync_weights")}
            progress("overlap: phases of the same prompts, timed apart")
            rollouts, retrieval = [], []
            for step in range(steps):
                seconds, rollout = _timed(lambda: run.rollout(step))
                rollouts.append(seconds)
                retrieval.append(sum(e.search_seconds for e in rollout.episodes))
            episodes = StepRollout(rollout.episodes)  # scored by the scorer each time (not dynamic sampling's)
            batch = run.train_batch(episodes)

            def overlapped_pass() -> Any:  # as the driver does it
                pending = run.score(episodes)
                run.ref_logprobs(batch)
                return ray.get(pending)

            overlapped_pass()  # warm-up
            serial, overlapped, reward, reference = [], [], [], []
            for _ in range(repeats):
                reward.append(_timed(lambda: ray.get(run.score(episodes)))[0])
                reference.append(_timed(lambda: run.ref_logprobs(batch))[0])
                serial.append(reward[-1] + reference[-1])
                overlapped.append(_timed(overlapped_pass)[0])
            modes = loop_mode_times(run, steps, mode_steps, progress) if mode_steps else {}
        finally:
            run.close()
    use = slice(1, None) if steps > 1 else slice(None)
    times.update({"retrieval": statistics.mean(retrieval[use]), "replay_rollout": statistics.mean(rollouts[use]),
                  "reward": statistics.median(reward), "reference": statistics.median(reference),
                  "serial": statistics.median(serial), "overlapped": statistics.median(overlapped),
                  "episodes": len(episodes.episodes), "steps_kept": len(kept),
                  "agent_mode": float(run.cfg.rollout.mode == "agent"), "modes": modes,
                  "mode_steps": mode_steps})
    return times


# (name, trainer.mode, algorithm.max_staleness), measured in this order on one run's pools
LOOP_MODES = (("sync", "sync", 0), ("async, staleness 1", "async", 1), ("async, staleness 2", "async", 2))


def loop_mode_times(run: TrainingRun, first_step: int, steps: int,
                    progress: Progress = lambda s: None) -> dict[str, dict[str, float]]:
    """Per loop mode, `steps` driver steps after one that fills the pipeline: mean wall seconds per step, trained
    episodes per step, and the seconds the learner and the engines sat idle per step."""
    out, step, timer = {}, first_step, PhaseTimer()
    episodes = run.cfg.trainer.prompts_per_step * run.cfg.rollout.n_samples
    for name, mode, staleness in LOOP_MODES:
        progress(f"async: {steps} steps, {name}")
        set_loop_mode(run, mode, staleness)
        walls, learner_idle, engine_idle = [], [], []
        for i in range(steps + 1):
            began = time.perf_counter()
            m, _ = one_step(run, step, timer)
            wall, step = time.perf_counter() - began, step + 1
            if i == 0:
                continue
            walls.append(wall)
            if mode == "sync":  # the learner waits out the rollout; the engine everything else
                learner_idle.append(m["time/rollout"])
                engine_idle.append(wall - m["time/rollout"])
            else:
                learner_idle.append(m["async/learner_idle_s"])
                engine_idle.append(m["async/engine_idle_s"])
        out[name] = {"wall": statistics.mean(walls), "episodes": float(episodes),
                     "learner_idle": statistics.mean(learner_idle), "engine_idle": statistics.mean(engine_idle)}
    return out


def set_loop_mode(run: TrainingRun, mode: str, max_staleness: int = 1) -> None:
    """Switch a started run between sync and async steps (the async benchmark runs both on one set of pools);
    rollouts already queued stay, within the new bound."""
    if mode == "sync":
        run.rollouts = SyncRollouts(run.engines, run.loader, run.cfg)
    elif isinstance(run.rollouts, AsyncRollouts):
        run.rollouts.queue.depth = max_staleness
    else:
        queue = RolloutQueue(run.start_rollout, max_staleness, run.cfg.trainer.prompts_per_step)
        run.rollouts = AsyncRollouts(queue, run.cfg.trainer.total_steps)


def step_rows(t: dict[str, float]) -> list[Row]:
    step = t["time/step"]
    base = f"step {step:.2f} s"
    measured = f"measured: time/* of kr1.run.loop steps, mean of {t['steps_kept']:.0f} step(s) after the first"
    derived = "derived: the same prompts timed apart after those steps, in the same run"
    other = step - sum(t[k] for k in ("time/rollout", "time/score_and_ref", "time/update", "time/sync_weights"))
    rows = [("rollout (generation + retrieval)", t["time/rollout"], measured),
            ("retrieval, inside the rollout", t["retrieval"],
             f"{derived}; Episode.search_seconds, {t['retrieval'] / t['replay_rollout']:.0%} of that run's rollout"),
            ("reward ‖ reference (score_and_ref)", t["time/score_and_ref"], measured),
            ("reward alone", t["reward"], derived),
            ("reference alone", t["reference"], derived),
            ("update", t["time/update"], measured)]
    out = [Row("step breakdown", name, f"{s:.3f} s", base, s / step, notes=note) for name, s, note in rows]
    sync = t["time/sync_weights"]
    out.append(Row("step breakdown", "weight sync (object store)", f"{sync:.3f} s", base, sync / step, "< 5% of step",
                   met(sync / step < 0.05), measured))
    out.append(Row("step breakdown", "other (evaluate, checkpoint)", f"{other:.3f} s", base, other / step,
                   notes=measured))
    return out


def overlap_rows(t: dict[str, float]) -> list[Row]:
    return [Row("overlap", "reward ‖ reference vs reward then reference", f"{t['overlapped']:.3f} s",
                f"{t['serial']:.3f} s", t["serial"] / t["overlapped"], notes=(
                    f"ratio = serial / overlapped; {t['episodes']:.0f} episodes; reward alone {t['reward']:.3f} s, "
                    f"reference alone {t['reference']:.3f} s (medians)")),
            Row("overlap", "retrieval ‖ generation inside the rollout",
                "streamed (agent loop)" if t["agent_mode"] else "not overlapped", "-", 1.0, notes=(
                    "rollout.mode=agent: queries of in-flight episodes go to the retriever in batches while the "
                    "others generate" if t["agent_mode"] else "rollout.mode=turn: each turn waits for its search"
                ) + f"; retrieval batches take {t['retrieval'] / t['replay_rollout']:.0%} of the rollout's wall time")]


def async_rows(t: dict[str, Any], num_engines: int, learner_cores: int, cores: int) -> list[Row]:
    """Trained episodes per second of each async bound against the sync loop, on the same pools, with the idle
    shares and the core-seconds bound on what overlapping can give."""
    modes = t["modes"]
    sync = modes["sync"]
    rollout, rest = sync["learner_idle"], sync["wall"] - sync["learner_idle"]
    # perfect overlap: a step takes the longer side, or the core-seconds of both spread over every core
    bound_step = max(rollout, rest, (rollout * num_engines + rest * learner_cores) / cores)
    bound = sync["wall"] / bound_step

    def idle(m: dict[str, float]) -> str:
        return f"learner idle {m['learner_idle'] / m['wall']:.0%}, engine idle {m['engine_idle'] / m['wall']:.0%}"

    rows = []
    for name in ("async, staleness 1", "async, staleness 2"):
        m = modes[name]
        ours, theirs = m["episodes"] / m["wall"], sync["episodes"] / sync["wall"]
        goal = name.endswith("1")
        rows.append(Row("async", f"{name} vs sync, trained episodes/s", f"{ours:.1f} episodes/s",
                        f"{theirs:.1f} episodes/s", ours / theirs, ">= 1.25x" if goal else "-",
                        met(ours / theirs >= 1.25) if goal else "-",
                        f"step {m['wall']:.2f} s vs {sync['wall']:.2f} s; {idle(m)}; sync: {idle(sync)}; bound "
                        f"{bound:.2f}x (sync rollout {rollout:.2f} s on {num_engines} engine(s), the rest "
                        f"{rest:.2f} s on {learner_cores} learner rank(s), {cores} cores); one run's pools, "
                        f"sync then staleness 1 then 2, mean of {t['mode_steps']:.0f} steps after one that fills "
                        f"the queue"))
    return rows
