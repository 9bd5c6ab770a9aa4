"""The warm start kr1 ships: the default run loads it (its key is the default config's), its checksums guard it,
and the command that built it still builds a model of its shape (the session's tiny model is built by that same
command, `python -m kr1.warm_start`, and every training test trains it)."""

from __future__ import annotations

import json
import shutil

import pytest

from kr1.config import load_config
from kr1.run.assets import warm_start_key
from kr1.training.shipped import (PROVENANCE, SHIP_COMMAND, SHIPPED_DIR, ShippedModelError, read_provenance,
                                  shipped_model)
from kr1.world.synthetic import WORLD_VERSION

# the vocabulary is the BPE's on the world's texts: the session's 200-person world fills 1,941 of the 3,072 asked
ARCHITECTURE = ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "tie_word_embeddings")


def _default_key() -> str:
    cfg = load_config("default")
    from pathlib import Path

    world = Path(f"world{WORLD_VERSION}-seed{cfg.data.synthetic_seed}-people{cfg.data.synthetic_people}")
    return warm_start_key(cfg, world)


def test_the_default_run_loads_the_shipped_warm_start_with_its_provenance():
    record = read_provenance()
    assert record is not None, f"no {PROVENANCE} in {SHIPPED_DIR}: build it with {SHIP_COMMAND}"
    assert record["key"] == _default_key(), "the default config no longer matches the shipped warm start"
    assert record["command"].startswith(SHIP_COMMAND) and record["seed"] == load_config("default").trainer.seed
    assert shipped_model(_default_key()) == (SHIPPED_DIR, None)
    size = sum(p.stat().st_size for p in SHIPPED_DIR.iterdir())
    assert size < 8 * 2 ** 20, f"the shipped warm start is {size / 2 ** 20:.1f} MiB"


def test_a_damaged_shipped_file_is_one_line_naming_it_and_the_command(tmp_path):
    copy = shutil.copytree(SHIPPED_DIR, tmp_path / "shipped")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ShippedModelError) as refused:
        shipped_model(_default_key(), copy)
    message = str(refused.value)
    assert "model.safetensors differs from its recorded sha256" in message and SHIP_COMMAND in message
    assert "\n" not in message


def test_a_changed_world_or_tokenizer_version_is_told_with_the_command(tmp_path):
    copy = shutil.copytree(SHIPPED_DIR, tmp_path / "shipped")
    record = json.loads((copy / PROVENANCE).read_text())
    key = record["key"]
    newer_world = key.replace(f"world{WORLD_VERSION}-", f"world{WORLD_VERSION + 1}-", 1)
    found, note = shipped_model(newer_world, copy)
    assert found is None and f"world version {WORLD_VERSION}" in note and SHIP_COMMAND in note
    # another world size or seed is simply another warm start, built in the cache as before
    assert shipped_model(key.replace("-seed0-people", "-seed5-people", 1), copy) == (None, None)


def test_the_build_command_still_builds_the_shipped_shape(tiny_model):
    built = json.loads((tiny_model / "config.json").read_text())
    shipped = json.loads((SHIPPED_DIR / "config.json").read_text())
    assert {k: built[k] for k in ARCHITECTURE} == {k: shipped[k] for k in ARCHITECTURE}
    tokenizer = json.loads((tiny_model / "tokenizer_config.json").read_text())
    shipped_tokenizer = json.loads((SHIPPED_DIR / "tokenizer_config.json").read_text())
    for key in ("eos_token", "pad_token", "chat_template"):
        assert tokenizer.get(key) == shipped_tokenizer.get(key), key
