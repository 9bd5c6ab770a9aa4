"""Find, or build when missing, what a run reads: question files, the BM25 index, the model.

    assets = resolve_assets(cfg)     # builds the synthetic world, index and tiny model on first use
    assets.questions("train"), assets.split_paths("dev"), assets.index_dir, assets.model_path

For `data.name=synthetic` everything is derived from the config and cached under
`data.cache_dir`, keyed by the settings that shape it, so reruns reuse it. For
`data.name=2wiki` the paths come from the config and must exist (or the index is
built from `retriever.corpus_path`). `data.train_path` may list several files: a mixture.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kr1.config import Config, ConfigError, ModelConfig, expand_path
from kr1.data import DataError, QARecord, load_question_files
from kr1.retrieval.index import BM25IndexError, IndexManifest, check_index
from kr1.run.index_build import build_index
from kr1.training.shipped import shipped_model, write_provenance
from kr1.world.synthetic import WORLD_VERSION, generate

MANIFEST = "manifest.json"
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _note(message: str) -> None:
    print(message, file=sys.stderr)  # stdout stays for results (tables, JSON)


# the closed-book column's default for the synthetic world: the index of the world of this seed offset
DECOY_SEED_OFFSET = 1000
# the warm start's practice world (model.bootstrap_practice_people): the world of this seed offset
PRACTICE_SEED_OFFSET = 2000


@dataclass
class Assets:
    question_paths: dict[str, list[Path]]  # split -> its question files (several: a mixture)
    index_dir: Path
    model_path: str
    decoy_index_dir: Path | None = None  # passages that cannot answer the questions (closed-book evaluation)

    def split_paths(self, split: str) -> list[Path]:
        if split not in self.question_paths:
            raise ConfigError(f"no question file for split {split!r}; set data.{split}_path")
        return self.question_paths[split]

    def questions(self, split: str) -> list[QARecord]:
        """The split's questions, a mixture's files one after another (the prompt loader shuffles them)."""
        return load_question_files(self.split_paths(split))


def synthetic_world(cache_dir: str | Path, seed: int, people: int, progress: bool = False,
                    avoid: Path | None = None) -> Path:
    """The synthetic world of `people` people under `cache_dir`, generated on first use; `avoid`: a world whose
    entity names this one may not use (for a decoy or practice world beside it)."""
    beside = f"-beside-{avoid.name}" if avoid is not None else ""
    world = Path(cache_dir) / f"world{WORLD_VERSION}-seed{seed}-people{people}{beside}"
    if not (world / MANIFEST).is_file():
        if progress:
            _note(f"building the synthetic world in {world}")
        generate(world, seed, people, avoid=avoid)
    return world


def index_of_corpus(corpus: str | Path, out: str | Path, num_shards: int) -> Path:
    """kr1's index of `corpus` in `num_shards` shards at `out`, rebuilt only when the one there is of
    another corpus (or missing)."""
    out = Path(out)
    try:
        fresh = IndexManifest.load(out).corpus == str(Path(corpus).resolve())
    except BM25IndexError:
        fresh = False
    if not fresh:
        build_index(corpus, out, num_shards, progress=False)
    return out


def _index(cfg: Config, corpus: Callable[[], Path] | None, default_dir: Path | None, progress: bool) -> Path:
    """retriever.index_dir (else `default_dir`), built from `corpus()` where it holds no index yet."""
    if cfg.retriever.index_dir:
        index = expand_path(cfg.retriever.index_dir)
    elif default_dir is not None:
        index = default_dir
    else:
        raise ConfigError("retriever.index_dir is not set (build one with python -m pipelines.build_index)")
    if not (index / MANIFEST).is_file():
        if corpus is None:
            raise ConfigError(f"retriever.index_dir {index} holds no index and retriever.corpus_path is not set")
        if progress:
            _note(f"building the BM25 index ({cfg.retriever.num_shards} shards) in {index}")
        build_index(corpus(), index, cfg.retriever.num_shards, cfg.retriever.k1, cfg.retriever.b, progress=progress)
    return index


def warm_start_key(cfg: Config, world: Path) -> str:
    """The name of the warm start a synthetic run of `cfg` starts from: everything it depends on."""
    from kr1.training.bootstrap import BOOTSTRAP_VERSION  # brings torch and transformers: on first use

    m = cfg.model
    follow = f"-follow{m.bootstrap_follow_fraction:g}" if m.bootstrap_follow_fraction else ""
    multihop = f"-multihop{m.bootstrap_multihop_fraction:g}" if m.bootstrap_multihop_fraction else ""
    lr = f"-lr{m.bootstrap_lr:g}" if m.bootstrap_lr != ModelConfig.bootstrap_lr else ""
    practice = f"-practice{m.bootstrap_practice_people}" if m.bootstrap_practice_people else ""
    return (f"{world.name}-model{BOOTSTRAP_VERSION}-{m.bootstrap_size}-sft{m.bootstrap_sft_steps}"
            f"{follow}{multihop}{lr}{practice}-seed{cfg.trainer.seed}")


def _bootstrapped_model(cfg: Config, world: Path, index: Path, progress: bool) -> str:
    """The shipped warm start when it was built for this config (checksums checked), else one built in the
    cache on first use."""
    key = warm_start_key(cfg, world)
    shipped, note = shipped_model(key)
    if shipped is not None:
        return str(shipped)
    if note:
        _note(note)
    out = world.parent / key
    if not (out / "config.json").is_file():
        build_warm_start(cfg, out, world=world, index=index, progress=progress)
    return str(out)


def build_warm_start(cfg: Config, out: Path | None = None, command: str | None = None, world: Path | None = None,
                     index: Path | None = None, progress: bool = True) -> Path:
    """Build the warm start of a synthetic run of `cfg` into `out` (default: where the run looks in the cache);
    with `command`, record its provenance (the command, seed, settings, checksums) beside it."""
    from kr1.training.bootstrap import bootstrap

    d, m = cfg.data, cfg.model
    world = world or synthetic_world(expand_path(d.cache_dir), d.synthetic_seed, d.synthetic_people, progress)
    out = Path(out) if out is not None else world.parent / warm_start_key(cfg, world)
    sft_world, sft_index = world, index or _world_index(cfg, world, progress, "the BM25 index")
    if m.bootstrap_practice_people:  # a world of its own seed: no entity of the run's world is in it
        sft_world = synthetic_world(world.parent, d.synthetic_seed + PRACTICE_SEED_OFFSET,
                                    m.bootstrap_practice_people, progress, avoid=world)
        sft_index = _world_index(cfg, sft_world, progress, "the practice world's index")
    if progress:
        _note(f"bootstrapping the {m.bootstrap_size} model in {out}")
    bootstrap(world, out, cfg.trainer.seed, m.bootstrap_size, index=sft_index, sft_steps=m.bootstrap_sft_steps,
              progress=progress, follow_fraction=m.bootstrap_follow_fraction,
              multihop_fraction=m.bootstrap_multihop_fraction, lr=m.bootstrap_lr, sft_world=sft_world)
    if command is not None:
        settings = {"data.synthetic_seed": d.synthetic_seed, "data.synthetic_people": d.synthetic_people,
                    **{f"model.{k}": v for k, v in vars(m).items() if k.startswith("bootstrap_")}}
        write_provenance(out, warm_start_key(cfg, world), command, cfg.trainer.seed, settings)
    return out


def _decoy_index(cfg: Config, own_world: Callable[[], Path] | None, progress: bool) -> Path | None:
    """The closed-book column's index: retriever.decoy_index_dir, or for the synthetic world (`own_world`) the
    index of another seed's world (built on first use); None where there is neither."""
    if cfg.retriever.decoy_index_dir:
        index = expand_path(cfg.retriever.decoy_index_dir)
        check_index(index)
        return index
    if own_world is None or cfg.retriever.corpus_path:
        return None
    own, d = own_world(), cfg.data
    world = synthetic_world(own.parent, d.synthetic_seed + DECOY_SEED_OFFSET, d.synthetic_people, progress, avoid=own)
    return _world_index(cfg, world, progress, "the decoy index (closed-book evaluation)")


def _world_index_dir(cfg: Config, world: Path) -> Path:
    return world.parent / f"{world.name}-index{cfg.retriever.num_shards}"


def _world_index(cfg: Config, world: Path, progress: bool, what: str) -> Path:
    """The index beside a synthetic world, built on first use."""
    index = _world_index_dir(cfg, world)
    if not (index / MANIFEST).is_file():
        if progress:
            _note(f"building {what} in {index}")
        build_index(world / "corpus.jsonl", index, cfg.retriever.num_shards, cfg.retriever.k1, cfg.retriever.b,
                    progress=False)
    return index


def resolve_assets(cfg: Config, progress: bool = True, decoy: bool = False) -> Assets:
    """Paths of every input of a run, building the embedded default's on first use (with `decoy`, also the
    closed-book column's index)."""
    d = cfg.data
    explicit = {s: getattr(d, f"{s}_path") for s in ("train", "dev", "test")}
    explicit = {s: [p] if isinstance(p, str) else p for s, p in explicit.items()}  # one file or a mixture
    own_world = None
    if d.name == "synthetic":
        def own_world() -> Path:  # generated only where something of it is used (not with every path given)
            return synthetic_world(expand_path(d.cache_dir), d.synthetic_seed, d.synthetic_people, progress)
        paths = {s: [expand_path(x) for x in p] if p else [own_world() / f"{s}.jsonl"] for s, p in explicit.items()}
        corpus = expand_path(cfg.retriever.corpus_path) if cfg.retriever.corpus_path else None
        index = _index(cfg, lambda: corpus or own_world() / "corpus.jsonl",
                       None if cfg.retriever.index_dir else _world_index_dir(cfg, own_world()), progress)
        model = cfg.model.path or _bootstrapped_model(cfg, own_world(), index, progress)
    else:
        paths = {s: [expand_path(x) for x in p] for s, p in explicit.items() if p}
        corpus = expand_path(cfg.retriever.corpus_path) if cfg.retriever.corpus_path else None
        index = _index(cfg, corpus and (lambda: corpus), None, progress)
        if not cfg.model.path:
            raise ConfigError("model.path is not set (a hub id such as Qwen/Qwen2.5-1.5B-Instruct, or a directory)")
        model = cfg.model.path
    for split, files in paths.items():
        for path in files:
            if not path.is_file():
                raise DataError(f"{path}: question file for split {split!r} not found")
    check_index(index, cfg.retriever.num_shards)  # a mismatched index fails here, before any actor starts
    if cfg.model.path:
        model = resolve_model_path(cfg.model.path, cfg.model.gguf_file)
    return Assets(paths, index, model, _decoy_index(cfg, own_world, progress) if decoy else None)


def resolve_model_path(path: str, gguf_file: str | None = None, key: str = "model.path") -> str:
    """A local model directory or a hub id, checked now (its config and tokenizer load), not inside an actor
    after the run directory is written; `key` is what the message calls it."""
    local = expand_path(path)
    if local.exists():
        if not local.is_dir():
            raise ConfigError(f"{key} {local} is a file, not a model directory")
        if gguf_file:  # the weights and tokenizer are in the GGUF file: the actors load it
            if not (local / gguf_file).is_file():
                raise ConfigError(f"model.gguf_file {gguf_file!r} not found in {key} {local}")
            return str(local)
        if not (local / "config.json").is_file():
            raise ConfigError(f"{key} {local} holds no config.json: not a Hugging Face model directory")
        _check_loads(str(local), f"{key} {local}")
        return str(local)
    if not HUB_ID.fullmatch(path):
        raise ConfigError(f"{key} {path} does not exist (and is not a hub id like Qwen/Qwen2.5-1.5B-Instruct)")
    from huggingface_hub import constants, is_offline_mode, try_to_load_from_cache

    if is_offline_mode() and not isinstance(try_to_load_from_cache(path, gguf_file or "config.json"), str):
        raise ConfigError(f"{key} {path} is not in the local hub cache ({constants.HF_HUB_CACHE}) and the hub is "
                          f"offline (HF_HUB_OFFLINE=1): download it first (hf download {path}) or give a directory")
    if not gguf_file:
        _check_loads(path, f"{key} {path}")
    return path


def _check_loads(model: str, what: str) -> None:
    """The model's config and tokenizer load (from the hub cache or the hub, for a hub id), or a one-line error."""
    from transformers import AutoConfig, AutoTokenizer  # 3 s of imports: here, once the other inputs are checked

    loaded = {}
    for part, load in (("config.json", AutoConfig.from_pretrained), ("tokenizer", AutoTokenizer.from_pretrained)):
        try:
            loaded[part] = load(model)
        except Exception as e:  # noqa: BLE001 (transformers raises OSError, ValueError, KeyError, ... per cause)
            reason = " ".join(str(e).split()) or type(e).__name__
            raise ConfigError(f"{what}: its {part} does not load ({reason})") from None
    if len(loaded["tokenizer"]) < 2:  # transformers makes an empty tokenizer where the files are missing
        raise ConfigError(f"{what}: holds no tokenizer (no tokenizer.json or vocabulary files)")
