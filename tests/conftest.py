"""Shared fixtures, all of them here: one local Ray for the session, a small synthetic world with its
indexes, a tiny warm-started model, a real rollout batch, and one short training run.

Everything is built locally; HF_HUB_OFFLINE=1 makes any accidental download fail loudly. The tiny
model's warm start (minutes of single-threaded SFT) runs in a child process from the start of the
session, and the tests that need no model run first, on the other core, while it trains.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray 2.60's local clusters turn token auth on and save a new token to ~/.ray/auth_token, after which every Ray
# the user starts asks for it: the session's token lives in the environment (its Ray processes inherit it)
if not any(os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")):
    import secrets

    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import ray  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# the driver settings every run-level test shares (small batches, frequent checkpoints and evaluations)
RUN_SETTINGS = {"retriever.num_cpus_per_shard": 0.5, "trainer.prompts_per_step": 3, "rollout.n_samples": 3,
                "trainer.eval_every": 2, "trainer.eval_prompts": 6, "trainer.checkpoint_every": 2,
                "learner.lr": 1e-3, "algorithm.kl_coef": 0.01, "reward.weights.format": 0.5,
                "reward.weights.f1": 1.0, "trainer.probe_prompts": 0}
TINY_SFT_STEPS = 250
# the trained run (and its resumed twin): separate reference workers, so that every role has actors; DAPO's
# dynamic sampling and clip-higher, the evidence reward and a reward of the tests' own by import path, so that
# resuming them is exact too; a probe of four training questions at steps 0, 2 and 3
TRAINED_RUN = {"trainer.total_steps": 3, "reference.placement": "separate", "reference.num_workers": 2,
               "algorithm.dynamic_sampling": True, "reward.weights.evidence": 0.5, "algorithm.clip_eps_high": 0.28,
               "reward.weights.reward_plugins:searched_twice": 0.25, "trainer.probe_prompts": 4,
               "trainer.probe_every": 2, "algorithm.step_advantage_weight": 1.0}


# what the test command may add to the user's home: caches (pip, Hugging Face, numba, ~/.cache/kr1)
HOME_ALLOWED = {".cache"}


def _home_entries() -> set[str]:
    """Top-level names in $HOME, and every file under ~/.ray (whose auth_token turns on token auth)."""
    home = Path.home()
    if not home.is_dir():
        return set()
    ray_dir = home / ".ray"
    files = {str(p.relative_to(home)) for p in ray_dir.rglob("*")} if ray_dir.is_dir() else set()
    return {p.name for p in home.iterdir()} | files


@pytest.fixture(scope="session", autouse=True)
def home_untouched():
    """The tests leave the user's home as they found it, caches aside: fails the session otherwise."""
    before = _home_entries()
    yield
    added = sorted(_home_entries() - before - HOME_ALLOWED)
    assert not added, f"the tests wrote into {Path.home()}: {added}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need no model first, so they run while the tiny model's warm start trains."""
    items.sort(key=lambda item: "tiny_model" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (logical CPUs above the 2 real ones, for actor pools)."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=8, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from kr1.world.synthetic import generate

    out = tmp_path_factory.mktemp("world") / "world"
    generate(out, seed=0, people=200)
    return out


@pytest.fixture(scope="session")
def index_factory(ray_session, world_dir, tmp_path_factory):
    """Build (once per shard count) an index of the session world."""
    from kr1.run.index_build import build_index

    built: dict[int, Path] = {}

    def make(num_shards: int) -> Path:
        if num_shards not in built:
            out = tmp_path_factory.mktemp(f"index{num_shards}") / "index"
            build_index(world_dir / "corpus.jsonl", out, num_shards, progress=False)
            built[num_shards] = out
        return built[num_shards]

    return make


@pytest.fixture(scope="session")
def decoy_index(ray_session, world_dir, tmp_path_factory) -> Path:
    """The index of another seed's world beside the session world: the closed-book column's retriever."""
    from kr1.run.index_build import build_index
    from kr1.world.synthetic import generate

    world = tmp_path_factory.mktemp("decoy") / "world"
    generate(world, seed=1000, people=60, avoid=world_dir)
    build_index(world / "corpus.jsonl", world.parent / "index", 2, progress=False)
    return world.parent / "index"


@pytest.fixture(scope="session", autouse=True)
def tiny_model_build(request, tmp_path_factory):
    """`python -m kr1.warm_start`, the command that builds the shipped warm start, started at once in a child
    process (it trains on one thread) when any collected test needs the tiny model: the session's world (seed 0,
    200 people, generated again in its own cache), no practice world, single-hop look-ups only."""
    if not any("tiny_model" in getattr(item, "fixturenames", ()) for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("model") / "tiny"
    log = out.parent / "bootstrap.log"
    with open(log, "w") as handle:
        child = subprocess.Popen([sys.executable, "-m", "kr1.warm_start", "--out", str(out),
                                  f"data.cache_dir={out.parent / 'cache'}", "data.synthetic_people=200",
                                  "retriever.num_shards=2", "model.bootstrap_size=tiny",
                                  "model.bootstrap_practice_people=0", "model.bootstrap_multihop_fraction=0",
                                  f"model.bootstrap_sft_steps={TINY_SFT_STEPS}", "trainer.seed=0"],
                                 cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    yield child, out, log
    if child.poll() is None:
        child.kill()
        child.wait()


@pytest.fixture(scope="session")
def tiny_model(tiny_model_build) -> Path:
    """A tiny Qwen2 with a locally trained tokenizer, warm-started on the tag format."""
    child, out, log = tiny_model_build
    assert child.wait() == 0, log.read_text()[-3000:]
    return out


@pytest.fixture(scope="session")
def questions(world_dir):
    """Six multi-hop and six single-hop dev questions."""
    from kr1.data import load_questions

    return load_questions(world_dir / "dev.jsonl")[:6] + load_questions(world_dir / "single_hop.jsonl")[:6]


@pytest.fixture(scope="session")
def retrieval_queries(world_dir) -> list[str]:
    """Train questions, passage titles, and queries that exercise ties and empty results."""
    from kr1.data import load_corpus, load_questions

    problems = [q.problem for q in load_questions(world_dir / "train.jsonl")[:150]]
    titles = [p.title for p in load_corpus(world_dir / "corpus.jsonl")[::7]]
    # repeated terms, terms in every passage and terms in none
    return problems + titles + ["born born born", "film", "zzzz qqqq", "the"]


@pytest.fixture(scope="module")
def generator(tiny_model):
    """The tiny model behind the `hf` generator, in the test process (its sampling state is per module)."""
    from kr1.rollout.generation import HFGenerator

    return HFGenerator(str(tiny_model), seed=0)


@pytest.fixture(scope="session")
def retriever_pool(ray_session, index_factory):
    from actors.retriever import RetrieverPool

    pool = RetrieverPool(index_factory(2), top_k=3, num_cpus_per_shard=0.5)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def rollout_batch(tiny_model, world_dir, index_factory):
    """A real rollout batch (4 train questions x 3 samples) with fixed non-zero advantages and reference
    log-probs that differ from the policy's."""
    import numpy as np
    import torch

    from kr1.data import load_questions
    from kr1.retrieval.scoring import search_index
    from kr1.rollout.episodes import RolloutSettings, new_episodes, run_episodes
    from kr1.rollout.generation import HFGenerator
    from kr1.training.batch import TrainBatch
    from kr1.training.policy_update import batch_logprobs

    generator = HFGenerator(str(tiny_model), seed=0)
    episodes = new_episodes(load_questions(world_dir / "train.jsonl")[:4], generator.tokenizer, 3, "compact")
    run_episodes(episodes, generator.generate, lambda queries: search_index(index_factory(2), queries, 3),
                 generator.tokenizer, RolloutSettings())
    batch = TrainBatch.from_episodes(episodes, generator.tokenizer.pad_token_id)
    rng = np.random.default_rng(0)
    ref = batch_logprobs(generator.model, batch, [np.arange(len(batch))], torch.device("cpu"))
    ref = ref + rng.normal(0, 0.05, ref.shape).astype(np.float32) * batch.attention_mask
    return batch.with_fields(advantages=rng.normal(size=len(batch)).astype(np.float32), ref_logprobs=ref,
                             rewards=np.zeros(len(batch), np.float32))


@pytest.fixture(scope="session")
def untrained_model(world_dir, tmp_path_factory) -> Path:
    """The tiny model's tokenizer and architecture, randomly initialised (no warm start): for tests of
    orchestration, where what the model says does not matter, so they run while `tiny_model` trains."""
    from kr1.training.bootstrap import bootstrap

    out = tmp_path_factory.mktemp("untrained") / "tiny"
    return bootstrap(world_dir, out, seed=0, size="tiny", sft_steps=0, progress=False)


@pytest.fixture(scope="session")
def run_overrides(world_dir, index_factory, decoy_index):
    """`key=value` overrides of the default config for a small driver run of `model` writing to `out`."""

    def make(out: Path, model: Path, **extra) -> list[str]:
        items = {"data.train_path": world_dir / "train.jsonl", "data.dev_path": world_dir / "dev.jsonl",
                 "data.test_path": world_dir / "test.jsonl", "retriever.index_dir": index_factory(2),
                 "retriever.decoy_index_dir": decoy_index,
                 "model.path": model, "trainer.output_dir": out, **RUN_SETTINGS, **extra}
        return [f"{k}={v}" for k, v in items.items()]

    return make


@pytest.fixture(scope="session")
def untrained_run_overrides(run_overrides, untrained_model):
    """Overrides for a run of the untrained model, whose every turn runs to its token limit: a short one."""
    return lambda out, **extra: run_overrides(out, untrained_model, **{"rollout.max_new_tokens_per_turn": 32,
                                                                       **extra})


@pytest.fixture(scope="session")
def mixed_train(world_dir, tmp_path_factory) -> list[Path]:
    """The world's train questions as a two-file mixture, as NQ + HotpotQA would be."""
    import json

    rows = [json.loads(line) for line in (world_dir / "train.jsonl").read_text().splitlines()]
    out = tmp_path_factory.mktemp("mixture")
    files = []
    for name, part in (("first", rows[0::2]), ("second", rows[1::2])):
        files.append(out / f"{name}.jsonl")
        files[-1].write_text("".join(json.dumps({**r, "dataset": name}) + "\n" for r in part))
    return files


@pytest.fixture(scope="session")
def trained_run_overrides(run_overrides, tiny_model, mixed_train):
    """The trained run's overrides for another output directory (a resumed twin): it trains on a mixture."""
    mixture = "[" + ",".join(map(str, mixed_train)) + "]"
    return lambda out, **extra: run_overrides(out, tiny_model, **{**TRAINED_RUN, "data.train_path": mixture,
                                                                  **extra})


@dataclass
class TrainedRun:
    out: Path  # its trainer.output_dir
    history: list[dict]  # each step's metrics
    actor_names: dict[str, list[str]]  # role -> the names its pool gave its actors
    alive: set[str]  # the named actors Ray listed while the run's pools were up


@pytest.fixture(scope="session")
def trained_run(ray_session, trained_run_overrides, tmp_path_factory) -> TrainedRun:
    """Three real driver steps with two learner ranks and two separate reference workers, on a two-file mixture
    with dynamic sampling: checkpoints at steps 2 and 3 (the last), dev evaluations at 0, 2 and 3, and the names
    every actor had."""
    from kr1.config import load_config
    from kr1.run.loop import run_steps
    from kr1.run.training_run import TrainingRun

    out = tmp_path_factory.mktemp("trained") / "run"
    run = TrainingRun(load_config("default", trained_run_overrides(out)), quiet=True)
    try:
        history = run_steps(run, quiet=True)
        names = {"retriever-shard": run.retriever.names, "rollout-engine": run.engines.names,
                 "learner-rank": run.learners.names, "reference-worker": run.reference.names}
        alive = set(ray.util.list_named_actors())
    finally:
        run.close()
    return TrainedRun(out, history, names, alive)


class ActorProcess:
    """The process behind an actor handle, for tests that kill actors and wait for their restart."""

    @staticmethod
    def pid(actor) -> int:
        """The actor's pid (waits for a restarting actor to come back)."""
        return ray.get(actor.__ray_call__.remote(lambda self: os.getpid()))

    @staticmethod
    def restarted(actor, pid: int, timeout_s: float = 120.0) -> int:
        """The actor's new pid once it has restarted (a kill lands asynchronously: calls made right
        after `ray.kill` may still reach the old process)."""
        deadline = time.monotonic() + timeout_s
        while (new := ActorProcess.pid(actor)) == pid:
            assert time.monotonic() < deadline, "the killed actor did not restart"
            time.sleep(0.1)
        return new


@pytest.fixture(scope="session")
def actor_process() -> type[ActorProcess]:
    return ActorProcess


def episode_trace(episodes) -> list[tuple]:
    """What an episode did, for comparing runs: tokens, mask, actions, queries, passages read, answer."""
    return [(e.response_ids, e.loss_mask, e.actions, e.queries, e.retrieved_ids, e.answer) for e in episodes]


@pytest.fixture(scope="session")
def greedy_trace():
    """Play questions greedily in this process through `search` (3 turns), and trace the episodes."""
    from kr1.rollout.episodes import RolloutSettings, new_episodes, run_episodes

    def play(generator, questions, search) -> list[tuple]:
        episodes = new_episodes(questions, generator.tokenizer, 1, template="compact")
        run_episodes(episodes, generator.generate, search, generator.tokenizer,
                     RolloutSettings(max_turns=3, temperature=0.0))
        return episode_trace(episodes)

    return play


@pytest.fixture(scope="session")
def trace():
    return episode_trace


@pytest.fixture
def one_line_error(capsys):
    """Run a command's main as `python -m` would (`run_cli`): it must exit 2 with one `error:` line, returned."""
    from kr1.errors import run_cli

    def stopped(entry) -> str:
        capsys.readouterr()
        with pytest.raises(SystemExit) as stopped_with:
            run_cli(entry)
        assert stopped_with.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err and err[-1].startswith("error: "), err[-5:]
        return err[-1]

    return stopped
