"""Safe resume: a run resumes from a checkpoint only if it still trains the same thing.

    inputs = input_fingerprints(assets)                        # written into every checkpoint (inputs.json)
    notes = check_resume(cfg, checkpoint_dir, inputs)           # ResumeMismatchError, or the leg changes to print

Keys that change what is trained (model, data, world, tokenizer, retriever settings the
model reads through, rollout sampling, reward, algorithm, optimizer) must equal the
checkpoint's `config.yaml`; a difference stops the run with one line listing them, unless
`trainer.resume_allow_changes=true`. Keys that may change between legs of one run (length,
evaluation and checkpoint cadence, cluster sizes and placement, backends that give the same
results) are only reported. The files the run reads (model config and tokenizer, index
manifest, training questions) are fingerprinted too, so a rebuilt index or another tokenizer
under the same path is caught as well.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import OmegaConf

from kr1.config import Config
from kr1.errors import UserError

INPUTS_FILE = "inputs.json"
# keys (or sections, ending in ".") that may change between legs of one run
LEG_KEYS = (
    "trainer.total_steps", "trainer.eval_every", "trainer.eval_prompts", "trainer.probe_prompts",
    "trainer.probe_every", "trainer.checkpoint_every",
    "trainer.output_dir", "trainer.max_recoveries", "trainer.keep_checkpoints", "trainer.eval_closed_book",
    "data.dev_path", "data.test_path", "data.split", "data.cache_dir",
    "retriever.index_dir", "retriever.corpus_path", "retriever.num_shards", "retriever.backend",
    "retriever.num_cpus_per_shard", "retriever.decoy_index_dir", "retriever.url", "retriever.http_max_concurrency",
    "retriever.http_timeout_s", "retriever.http_retries",
    "rollout.backend", "rollout.num_engines", "rollout.tensor_parallel_size", "rollout.gpu_memory_utilization",
    "rollout.enforce_eager", "rollout.sleep_level",
    "learner.num_workers", "learner.token_budget", "learner.gradient_checkpointing", "learner.cpu_offload",
    "learner.weight_sync", "reference.num_workers", "cluster.",
)
# how this leg starts, not what it runs: never reported
NOT_SETTINGS = ("trainer.resume", "trainer.resume_allow_changes", "trainer.overwrite")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
               "merges.txt", "tokenizer.model")


class ResumeMismatchError(UserError):
    """The checkpoint was trained with other settings or inputs than this run's (one-line message)."""


def _digest(paths: list[Path]) -> str:
    sha = hashlib.sha256()
    for path in paths:
        sha.update(path.name.encode() + b"\0" + path.read_bytes())
    return sha.hexdigest()[:16]


def input_fingerprints(model_path: str, index_dir: Path, train_paths: Sequence[Path]) -> dict[str, str]:
    """Digests of what the run reads: the model's config and tokenizer files (or its hub id), the index
    manifest, the training questions (every file of a mixture, in order)."""
    model_dir = Path(model_path)
    model = _digest([model_dir / n for n in MODEL_FILES if (model_dir / n).is_file()]) if model_dir.is_dir() \
        else f"hub:{model_path}"
    return {"model": model, "index": _digest([Path(index_dir) / "manifest.json"]),
            "train questions": _digest([Path(p) for p in train_paths])}


# mappings whose keys the user names (a reward added or dropped is a change): compared whole, not key by key
WHOLE_SETTINGS = ("reward.weights",)


def flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for a nested mapping."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and f"{prefix}{key}" not in WHOLE_SETTINGS:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[dict, dict]:
    """(changes of what is trained, leg changes): key -> (old, new), for keys both configs have."""
    training, legs = {}, {}
    for key in sorted(old.keys() & new.keys() - set(NOT_SETTINGS)):
        if old[key] != new[key]:
            leg = any(key == k or (k.endswith(".") and key.startswith(k)) for k in LEG_KEYS)
            (legs if leg else training)[key] = (old[key], new[key])
    return training, legs


def _listing(changes: Mapping[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{key} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def check_resume(cfg: Config, checkpoint: Path, inputs: Mapping[str, str]) -> list[str]:
    """Raise ResumeMismatchError if resuming from `checkpoint` would train something else; else the
    lines to print about what changes between the legs."""
    old = flat(OmegaConf.to_container(OmegaConf.load(checkpoint / "config.yaml")))  # type: ignore[arg-type]
    new = flat(OmegaConf.to_container(OmegaConf.structured(cfg)))  # type: ignore[arg-type]
    training, legs = config_changes(old, new)
    recorded = json.loads((checkpoint / INPUTS_FILE).read_text()) if (checkpoint / INPUTS_FILE).is_file() else {}
    changed_inputs = [name for name, digest in recorded.items() if inputs.get(name, digest) != digest]
    problems = ([_listing(training)] if training else []) + \
        ([f"other {' and '.join(changed_inputs)} files than it was trained on"] if changed_inputs else [])
    where = f"trainer.resume from {checkpoint}"
    if problems and not cfg.trainer.resume_allow_changes:
        raise ResumeMismatchError(f"{where}: this run changes what is trained: {'; '.join(problems)} "
                                  "(trainer.resume_allow_changes=true resumes anyway)")
    notes = [f"{where}: changed between legs: {_listing(legs)}"] if legs else []
    if problems:
        notes.append(f"{where}: trainer.resume_allow_changes=true: resuming although {'; '.join(problems)}")
    return notes
