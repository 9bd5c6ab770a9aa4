"""The learning-rate schedule: Search-R1's warm-up, constant or cosine after it, a pure function of the step."""

from __future__ import annotations

import pytest

from kr1.config import ConfigError, load_config
from kr1.training.lr_schedule import learning_rate, warmup_steps


def _learner(*overrides):
    return load_config("default", ["learner.lr=1e-6", *overrides]).learner


def test_search_r1_warms_up_over_286_of_1005_steps_then_stays_constant():
    cfg = _learner("learner.lr_warmup_ratio=0.285")
    assert warmup_steps(cfg, 1005) == 286  # verl: int(0.285 * 1005)
    rates = [learning_rate(cfg, step, 1005) for step in range(1005)]
    assert rates[0] == pytest.approx(1e-6 / 286)  # the first update already moves
    assert rates[142] == pytest.approx(1e-6 * 143 / 286)
    assert rates[285] == rates[286] == rates[-1] == 1e-6
    assert all(a < b for a, b in zip(rates[:286], rates[1:286]))


def test_cosine_decays_from_the_peak_to_the_floor_at_the_last_step():
    cfg = _learner("learner.lr_warmup_ratio=0.1", "learner.lr_schedule=cosine", "learner.lr_min_ratio=0.1")
    rates = [learning_rate(cfg, step, 100) for step in range(100)]
    assert rates[9] == 1e-6 and rates[-1] == pytest.approx(1e-7)
    assert rates[(10 + 99) // 2] == pytest.approx(0.55e-6, rel=0.02)  # halfway down
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))


def test_no_warmup_is_the_constant_rate():
    assert {learning_rate(_learner(), step, 30) for step in range(30)} == {1e-6}


@pytest.mark.parametrize("override, key", [("learner.lr_warmup_ratio=1.0", "learner.lr_warmup_ratio"),
                                           ("learner.lr_min_ratio=-0.1", "learner.lr_min_ratio"),
                                           ("learner.lr_schedule=linear", "learner.lr_schedule")])
def test_a_schedule_that_cannot_run_is_refused_at_load(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("default", [override])
