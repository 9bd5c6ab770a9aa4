"""The learner group: N Ray actors, one torch.distributed process group, the policy under FSDP2.

    group = LearnerGroup(cfg, model_path, placement)   # gloo on CPU, NCCL on GPU
    metrics = group.update(batch, step)                # token-budget micro-batches, learner.mini_batches AdamW steps
    state_ref = group.state_dict_ref()                 # full state dict, in the object store

Each worker loads the Hugging Face model, shards every decoder layer and then the whole
model with `fully_shard`, and runs `kr1.training.policy_update` on its slice of the batch. The
driver plans the micro-batches so that every rank runs the same number of passes, and
normalises the loss by the step's total loss tokens, so N workers make the same update
as one. Checkpoints are torch distributed checkpoints (each rank writes its shard) plus
the policy in Hugging Face format.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import ray
import torch

from kr1.cluster import actor_names, all_alive, get_all, stop_actors
from kr1.config import Config
from kr1.training.algorithms import loss_normalizer
from kr1.training.batch import TrainBatch
from kr1.training.lr_schedule import learning_rate
from kr1.training.memory_plan import learner_actor_env
from kr1.training.policy_update import batch_logprobs, train_step
from kr1.training.sharded_model import load_causal_lm, shard_model
from kr1.training.token_budget import TokenBudgetBatcher, rank_parts, rows_back
from kr1.training.weight_buckets import state_buckets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def trainer_transfer_engine(backend: str, model: Any, rank: int, engines: list[Any], world_size: int,
                            dtype: str | None = None) -> Any:
    """Build this learner rank's side of a vLLM weight-transfer engine: `ipc` / `nccl` on GPU, `gloo` anywhere
    (kr1.rollout.gloo_transfer, which ships floating tensors in `dtype`); `world_size` counts the vLLM workers."""
    from vllm.distributed.weight_transfer.base import ModuleSource
    from vllm.distributed.weight_transfer.clients import RayVLLMWeightSyncClient

    # the engine actors expose LLM's init/start/update/finish_weight_update methods under the same names
    client = RayVLLMWeightSyncClient(list(engines))
    source = ModuleSource(model)
    if backend == "gloo":  # importing the module registers it with vLLM's trainer-side factory
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        from kr1.rollout.gloo_transfer import GlooTrainerInitInfo, TiedModuleSource

        info = GlooTrainerInitInfo(rank=rank, master_address=ray.util.get_node_ip_address(),
                                   master_port=_free_port(), world_size=world_size + 1, dtype=dtype)
        return WeightTransferTrainerFactory.trainer_init(info, client=client, source=TiedModuleSource(model))
    if backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo, IPCTrainerWeightTransferEngine

        return IPCTrainerWeightTransferEngine.trainer_init(IPCTrainerInitInfo(rank=rank), client=client,
                                                           source=source)
    from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo, NCCLTrainerWeightTransferEngine

    address, port = ray.util.get_node_ip_address(), _free_port()
    info = NCCLTrainerInitInfo(rank=rank, master_address=address, master_port=port, world_size=world_size + 1)
    return NCCLTrainerWeightTransferEngine.trainer_init(info, client=client, source=source)


class LearnerWorker:
    """One rank of the learner group; a plain class that `ray.remote` wraps."""

    def __init__(self, cfg: Config, rank: int, world_size: int, model_path: str) -> None:
        self.cfg, self.rank, self.world_size, self.model_path = cfg, rank, world_size, model_path
        self.device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        torch.manual_seed(cfg.trainer.seed + rank)

    def __repr__(self) -> str:
        return f"LearnerWorker({self.rank}/{self.world_size})"

    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), _free_port()

    def setup(self, master_addr: str, master_port: int) -> bool:
        """Join the process group, load and shard the policy (and a colocated reference), build AdamW."""
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port))
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
        mesh = init_device_mesh(self.device.type, (self.world_size,))
        cfg, mixed = self.cfg, self.device.type == "cuda" and self.cfg.model.dtype != "float32"
        model = load_causal_lm(self.model_path, "float32", cfg.model.gguf_file)
        if cfg.learner.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.model = shard_model(model.to(self.device), mesh, cfg.learner.cpu_offload, mixed)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learner.lr,
                                           weight_decay=cfg.learner.weight_decay)
        self.reference = None
        if cfg.reference.placement == "colocate":
            reference = load_causal_lm(self.model_path, "float32", cfg.model.gguf_file).to(self.device).eval()
            self.reference = shard_model(reference.requires_grad_(False), mesh, cfg.learner.cpu_offload, mixed)
        return True

    def logprobs(self, part: TrainBatch, micro: Sequence[np.ndarray], reference: bool = False) -> np.ndarray:
        """(B_part, T) log-probs under the policy, or the colocated reference."""
        return batch_logprobs(self.reference if reference else self.model, part, micro, self.device,
                              chunk_tokens=self.cfg.learner.logits_chunk_tokens,
                              temperature=self.cfg.rollout.temperature)

    def train_step(self, part: TrainBatch, micro: Sequence[np.ndarray], normalizer: float,
                   lr: float) -> dict[str, float]:
        for group in self.optimizer.param_groups:  # the step's rate (kr1.training.lr_schedule)
            group["lr"] = lr
        metrics = train_step(self.model, self.optimizer, part, micro, normalizer=normalizer, scale=self.world_size,
                             algo=self.cfg.algorithm, grad_clip=self.cfg.learner.grad_clip, device=self.device,
                             chunk_tokens=self.cfg.learner.logits_chunk_tokens,
                             temperature=self.cfg.rollout.temperature)
        if self.device.type == "cuda":  # hand the update's cached blocks back before a colocated vLLM wakes
            torch.cuda.empty_cache()
        return metrics

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Gather the unsharded weights (every rank joins); rank 0 returns them on CPU."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(self.model, options=options)
        return state if self.rank == 0 else None

    def weight_buckets(self) -> list[ray.ObjectRef] | None:
        """The object-store sync's half here: every rank joins the gather; rank 0 casts the weights to the
        engines' dtype, cuts them into `learner.sync_bucket_mb` buckets and puts each in the object store."""
        state = self.full_state_dict()
        if state is None:
            return None
        dtype = getattr(torch, self.cfg.model.dtype)
        return [ray.put(part) for part in state_buckets(state, dtype, self.cfg.learner.sync_bucket_mb << 20)]

    def init_weight_transfer(self, backend: str, engines: list[Any], num_vllm_workers: int) -> bool:
        """Set up this rank's side of a vLLM weight-transfer engine (ipc, nccl or gloo)."""
        self.transfer = trainer_transfer_engine(backend, self.model, self.rank, engines, num_vllm_workers,
                                                dtype=self.cfg.model.dtype)
        return True

    def send_weights(self) -> bool:
        """Every rank materialises each full tensor; rank 0 sends it (IPC handles, NCCL or gloo broadcast)."""
        self.transfer.send_weights()
        return True

    def save_checkpoint(self, directory: str) -> bool:
        """Sharded model + optimizer (torch.distributed.checkpoint), this rank's RNG state, and on
        rank 0 the policy in Hugging Face format (loadable by from_pretrained and by vLLM)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        from transformers import AutoTokenizer

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(Path(directory) / "learner"))
        torch.save({"torch": torch.get_rng_state()}, Path(directory) / f"rng_learner{self.rank}.pt")
        full = self.full_state_dict()
        if self.rank == 0:
            policy = Path(directory) / "policy"
            self.model.save_pretrained(policy, state_dict=full, safe_serialization=True)
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(policy)
        return True

    def load_checkpoint(self, directory: str) -> bool:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        model_state, optim_state = get_state_dict(self.model, self.optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=str(Path(directory) / "learner"))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        rng = Path(directory) / f"rng_learner{self.rank}.pt"
        if rng.is_file():
            torch.set_rng_state(torch.load(rng)["torch"])
        return True


class LearnerGroup:
    """`learner.num_workers` LearnerWorker actors forming one process group."""

    def __init__(self, cfg: Config, model_path: str, placement: Any = None) -> None:
        self.cfg = cfg
        self.world_size = cfg.learner.num_workers
        self.batcher = TokenBudgetBatcher(cfg.learner.token_budget)
        actor = ray.remote(LearnerWorker)
        options = placement.options_for("learner") if placement else [{} for _ in range(self.world_size)]
        self.names = actor_names("learner-rank", self.world_size)  # as the Ray dashboard lists them
        env = learner_actor_env(cfg)  # no fragmentation OOM: expandable segments unless the user chose
        self.workers = [actor.options(name=self.names[r], **options[r], **env).remote(cfg, r, self.world_size,
                                                                                     model_path)
                        for r in range(self.world_size)]
        try:
            addr, port = ray.get(self.workers[0].address.remote())
            get_all([w.setup.remote(addr, port) for w in self.workers])
        except BaseException:  # a rank that cannot start (its node lost, say) leaves no other rank behind
            for worker in self.workers:  # no goodbye: a survivor may wait in a collective with the lost
                ray.kill(worker)
            raise

    def _parts(self, batch: TrainBatch) -> tuple[list[ray.ObjectRef], list[list[np.ndarray]], list[np.ndarray]]:
        """Slice the batch per rank (then `ray.put` each slice once) with each rank's micro-batch rows."""
        sliced = rank_parts(batch, self.batcher, self.world_size)
        return [ray.put(part) for _, part, _ in sliced], [m for _, _, m in sliced], [rows for rows, _, _ in sliced]

    def logprobs(self, batch: TrainBatch, reference: bool = False) -> np.ndarray:
        """(B, T) log-probs of the whole batch (policy, or the colocated reference)."""
        parts, micros, rows_of = self._parts(batch.tokens_only())  # no advantages or log-probs travel for it
        results = get_all([w.logprobs.remote(p, m, reference) for w, p, m in zip(self.workers, parts, micros)])
        return rows_back(batch.input_ids.shape, rows_of, results)

    def update(self, batch: TrainBatch, step: int = 0) -> dict[str, float]:
        """`learner.mini_batches` optimizer steps over the batch at training `step`'s learning rate; metrics
        summed over ranks."""
        metrics: dict[str, float] = {}
        lr = learning_rate(self.cfg.learner, step, self.cfg.trainer.total_steps)
        if self.cfg.learner.mini_batches > 1 and batch.old_logprobs is None:
            # later mini-batches step away from the rollout policy: the ratio needs its log-probs
            batch = batch.with_fields(old_logprobs=self.logprobs(batch))
        for mini in batch.chunk(self.cfg.learner.mini_batches):
            parts, micros, _ = self._parts(mini)
            normalizer = loss_normalizer(mini.loss_mask, self.cfg.algorithm.loss_agg)
            results = get_all([w.train_step.remote(p, m, normalizer, lr)
                               for w, p, m in zip(self.workers, parts, micros)])
            for name in results[0]:
                if name.endswith("_max"):  # a largest value: the largest over ranks and mini-batches
                    metrics[name] = max(metrics.get(name, 0.0), *(r[name] for r in results))
                    continue
                # grad_norm is global already; the other values are per-rank shares of the step
                value = results[0][name] if name == "grad_norm" else sum(r[name] for r in results)
                metrics[name] = metrics.get(name, 0.0) + value / self.cfg.learner.mini_batches
        metrics["lr"] = lr
        return metrics

    def state_dict_ref(self) -> ray.ObjectRef:
        """Rank 0's weights as a list of bucket refs, left in the object store for the engines to fetch."""
        refs = [w.weight_buckets.remote() for w in self.workers]
        # every rank joins the gather (a dead one must not leave the others waiting); rank 0's dict stays put
        return get_all(refs, fetch=[False] + [True] * (len(refs) - 1))[0]

    def save_checkpoint(self, directory: str) -> None:
        get_all([w.save_checkpoint.remote(directory) for w in self.workers])

    def load_checkpoint(self, directory: str) -> None:
        get_all([w.load_checkpoint.remote(directory) for w in self.workers])

    def alive(self) -> bool:
        """Every rank answers; else the group is rebuilt (a process group does not outlive a rank)."""
        return all_alive(self.workers)

    def close(self) -> None:
        stop_actors(self.workers)
        self.workers = []
