"""Stability monitors on scripted metric sequences: when each warns, once per crossing, and the collapse."""

from __future__ import annotations

from kr1.config import MonitorConfig
from kr1.training.stability_monitors import StabilityMonitors


def _step(entropy=1.0, kl=0.01, tokens=50.0, searches=1.0):
    return {"train/entropy": entropy, "train/kl": kl, "rollout/response_tokens": tokens, "rollout/searches": searches}


def test_a_healthy_run_is_quiet():
    monitors = StabilityMonitors(MonitorConfig())
    for step in range(1, 20):
        assert monitors.check(step, _step(entropy=1.0 + 0.05 * step, kl=0.01 * step, tokens=50 + step)) == []


def test_each_monitor_warns_once_when_it_crosses_and_again_after_it_came_back():
    monitors = StabilityMonitors(MonitorConfig(entropy_low=0.2, entropy_high=3.0, length_growth=3.0, kl_max=0.5,
                                               searches_min=0.1))
    assert monitors.check(1, _step()) == []  # the baselines: entropy 1.0, 50 tokens
    said = monitors.check(2, _step(entropy=0.1, kl=0.7))
    assert [c.monitor for c in said] == ["entropy_collapse", "kl_runaway"]
    assert said[0].text == ("warning: step 2: entropy collapse: train/entropy 0.1 is below 0.2 "
                            "(monitor.entropy_low)")
    assert monitors.check(3, _step(entropy=0.1, kl=0.8)) == []  # still over: not said again
    assert monitors.check(4, _step(entropy=1.0, kl=0.1)) == []  # back
    assert [c.monitor for c in monitors.check(5, _step(entropy=0.15))] == ["entropy_collapse"]  # crossed again
    said = monitors.check(6, _step(entropy=3.5, tokens=160.0, searches=0.0))
    assert [c.monitor for c in said] == ["entropy_blowup", "length_runaway", "searches_vanish"]
    assert said[2].text.endswith("rollout/searches 0 is below 0.1 (monitor.searches_min)")


def test_missing_metrics_are_not_judged():
    monitors = StabilityMonitors(MonitorConfig())
    assert monitors.check(1, {"rollout/searches": 1.0}) == []
    assert monitors.check(2, {"train/entropy": 0.0001}) == []  # the first entropy seen is the baseline
