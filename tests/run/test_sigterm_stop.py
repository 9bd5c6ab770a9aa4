"""`ray job stop` and a scheduler's SIGTERM: the driver stops as on Ctrl-C, closes what it started, keeps its
checkpoints whole and says how to continue."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import ray

from kr1.config import load_config
from kr1.run.loop import train
from kr1.training.checkpoint import CheckpointDirs, damage


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_sigterm_stops_a_run_like_ctrl_c_and_leaves_it_resumable(ray_session, untrained_run_overrides, tmp_path,
                                                                 capsys):
    """What `ray job stop` sends: the run stops where it is, closes its actors and frees its directory, keeps its
    checkpoints whole, and the command exits 143 with one line saying how to continue."""
    import signal
    import threading

    from kr1.errors import StopRequested, run_cli, stop_on_sigterm
    from kr1.run.run_lock import RunLock

    out = tmp_path / "run"
    cfg = load_config("default", untrained_run_overrides(out, **{"trainer.total_steps": 5,
                                                                  "trainer.checkpoint_every": 1}))
    before = set(ray.util.list_named_actors())

    def stop_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 300
        while not (out / "checkpoints" / "step_000001").is_dir() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    stop_on_sigterm()
    try:
        threading.Thread(target=stop_after_the_first_checkpoint, daemon=True).start()
        with pytest.raises(StopRequested):
            train(cfg, quiet=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert set(ray.util.list_named_actors()) == before, "the run's actors were left behind"
    RunLock.acquire(out).release()  # the directory is free for the resumed run
    latest = CheckpointDirs(out).latest()
    assert latest is not None and latest[0] >= 1 and not damage(latest[1], latest[0])
    rows = [r["step"] for r in _metrics(out)]
    assert rows == list(range(len(rows))) and len(rows) < 6, rows  # each step logged once, the run cut short
    with pytest.raises(SystemExit) as stopped:
        run_cli(lambda: (_ for _ in ()).throw(StopRequested()))
    assert stopped.value.code == 143
    said = capsys.readouterr().err.strip().splitlines()
    assert said[-1].startswith("stopped (SIGTERM):") and "trainer.resume=true" in said[-1]
