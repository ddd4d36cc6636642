"""Multi-process training with PyTorch DDP, as launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them training runs in one
process. Backend: NCCL on GPUs, gloo on CPUs. Every rank reads its share of each batch (a
``DistributedSampler``), DDP averages the gradients, and only rank 0 logs and writes files.

EMA codebooks. The residual VQ updates its codebooks from the vectors it sees, in place, during the
forward pass; under DDP each rank would update from its own share of the batch and the ranks'
codebooks would drift apart (DDP's buffer broadcast would then silently keep rank 0's and drop the
other ranks' data). :class:`CodebookSync` makes the update use the whole global batch instead:
hooks keep each codebook's statistics from before the step, sum the increments of ``cluster_size``
and ``embed_avg`` of every micro-batch, and at the end of the pass all-reduce the sums and recompute
``embed`` from them, which is exactly the update one process would make on the global batch. Buffers
are therefore kept equal on all ranks explicitly, and the generator is wrapped with
``broadcast_buffers=False``. The codebook options that keep codes alive run there too: the k-means
initialisation before the first pass is quantized (its statistics all-reduced), the expiry of dead
codes after the global update (decided on the all-reduced sizes, re-seeded from rank 0's vectors).

GPUs are used only when asked for (``--ngpu N``), and then they must be there: a job that asked for
GPUs and sees fewer stops with one error line before training instead of training on the CPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.hooks import RemovableHandle

from layers.vq import VectorQuantize
from utils.errors import CodecError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the training job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes files (rank 0)."""
        return self.rank == 0


def _check_gpus(ngpu: int, local_world_size: int) -> None:
    """Stop before training when the job asked for GPUs it cannot see."""
    visible = torch.cuda.device_count()
    if visible < ngpu:
        shown = os.environ.get("CUDA_VISIBLE_DEVICES")
        if torch.version.cuda is None and torch.version.hip is None:
            fix = (f"this torch ({torch.__version__}) is a CPU build: install a CUDA one (pip uninstall torch, then "
                   "TORCH_INDEX_URL=https://pypi.org/simple python -m utils.install_requirements: docs/training.md)")
        else:
            fix = "request them from the scheduler (sbatch --gpus-per-node) and check the CUDA driver"
        raise CodecError(
            f"--ngpu {ngpu} asks for {ngpu} GPU(s) per node but this process sees {visible}"
            f"{f' (CUDA_VISIBLE_DEVICES={shown})' if shown is not None else ''}: {fix}, or train on the CPU "
            "on purpose with --ngpu 0"
        )
    if local_world_size > ngpu:
        raise CodecError(
            f"{local_world_size} training processes on this node but --ngpu {ngpu}: start one process per GPU "
            f"(torchrun --nproc_per_node {ngpu})"
        )


def configure_tf32(device: torch.device, enabled: bool) -> None:
    """TF32 matmuls and convolutions on a GPU of compute capability 8 (Ampere) or newer, unless disabled."""
    if device.type != "cuda":
        return
    major, minor = torch.cuda.get_device_capability(device)
    use = enabled and major >= 8
    torch.backends.cuda.matmul.allow_tf32 = use
    torch.backends.cudnn.allow_tf32 = use
    if major >= 8:
        logger.info("TF32 matmuls and convolutions %s (compute capability %d.%d%s)", "on" if use else "off",
                    major, minor, "; --no-tf32 turns them off" if use else "")


def init_distributed(ngpu: int | None = None) -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Args:
        ngpu: GPUs per node the job asked for. 0: train on the CPU (the only way to choose it);
            N > 0: each process takes the GPU of its local rank, and fewer than N visible GPUs is an
            error; None: CUDA when present, else the CPU with a warning.

    Returns:
        The context: rank, local rank, world size and the device this process trains on.

    Raises:
        CodecError: the GPUs asked for are not there (raised before any process group is joined, so
            every process stops with that one line).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if ngpu is None:
        use_cuda = torch.cuda.is_available()
        if not use_cuda:
            logger.warning("No CUDA device: training on the CPU (--ngpu 0 chooses the CPU explicitly)")
    elif ngpu > 0:
        _check_gpus(ngpu, local_world_size)
        use_cuda = True
    else:
        use_cuda = False
    if world_size <= 1:
        return DistributedContext(device=torch.device("cuda", 0) if use_cuda else torch.device("cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        if use_cuda:  # bound to its GPU, so that NCCL's barriers need not guess the device
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    logger.info("DDP: rank %d of %d (local rank %d) on %s", rank, world_size, local_rank, device)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


_cpu_process_group: dist.ProcessGroup | None = None


def cpu_group() -> dist.ProcessGroup | None:
    """The group for small per-step decisions (stop flags): its collectives run on the CPU, so reading a
    result never waits for the GPU's queue. Under gloo the default group (None); under NCCL a gloo group
    over the same ranks, made at the first call (every rank makes that call at the same point)."""
    global _cpu_process_group
    if dist.get_backend() == dist.Backend.GLOO:
        return None
    if _cpu_process_group is None:
        _cpu_process_group = dist.new_group(backend="gloo")
    return _cpu_process_group


def shutdown_distributed(finished: bool = False) -> None:
    """Leave the process group, if one was joined.

    ``finished``: every rank got to the end of training. The ranks then wait for each other first (a
    barrier), and pause without the GIL: gloo's worker threads free a collective's tensors after the
    caller has its result, and freeing one that Python no longer holds takes the GIL. The process
    group's destructor (run when DDP's reducer is freed, GIL held) joins those threads, so one still
    waiting for the GIL would hang the process forever after its last step.
    """
    global _cpu_process_group
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
            time.sleep(0.05)
        _cpu_process_group = None  # destroyed with the default group
        dist.destroy_process_group()


def raise_first_error(error: CodecError | None, context: DistributedContext) -> None:
    """After a step that can fail on any rank (building the trainer, reading the checkpoint a run starts
    from) or on rank 0 alone (taking the experiment's lock), raise its error once: rank 0 raises the
    first rank's (naming the rank where it is another's) and the others leave quietly with exit status
    0, rank 0's failure failing the job, so that N processes do not print the same line N times.
    Without an error on any rank, return. Every rank calls this."""
    if not context.is_distributed:
        if error is not None:
            raise error
        return
    messages: list[str | None] = [None] * context.world_size
    dist.all_gather_object(messages, None if error is None else str(error), group=cpu_group())
    failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
    if not failed:
        return
    if not context.is_main:
        raise SystemExit(0)
    if error is not None:
        raise error
    rank, message = failed[0]
    raise CodecError(f"rank {rank}: {message}")


def bfloat16_mean_hook(group, bucket):  # not named bf16_compress_hook, nor annotated: DDP checks both
    """DDP communication hook (process group or None, ``dist.GradBucket``) -> future of the bucket's mean:
    all-reduced as bfloat16, returned in the bucket's dtype. Ours because torch's own bf16 hook requires
    NCCL, and gloo (CPU) reduces bfloat16 as well."""
    group = group if group is not None else dist.group.WORLD
    compressed = bucket.buffer().to(torch.bfloat16).div_(dist.get_world_size(group))
    reduced = dist.all_reduce(compressed, group=group, async_op=True).get_future()

    def decompress(future):
        buffer = bucket.buffer()
        buffer.copy_(future.value()[0])
        return buffer

    return reduced.then(decompress)


def wrap_ddp(model: nn.Module, context: DistributedContext, compress_bf16: bool = False) -> nn.Module:
    """``model`` in DDP when distributed (only its parameters that require grad are reduced), else itself.

    Wrap again after freezing parameters: DDP expects a gradient for every parameter that required
    one when it was built. ``compress_bf16`` all-reduces the gradients as bfloat16 (half the bytes;
    the mean is taken in bfloat16, so the ranks still apply the same update).
    """
    if not context.is_distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    wrapped = DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)
    if compress_bf16:
        wrapped.register_comm_hook(None, bfloat16_mean_hook)
    return wrapped


def all_reduce_mean(values: Mapping[str, float], context: DistributedContext) -> dict[str, float]:
    """Average scalars over the ranks (every rank must call this with the same keys)."""
    if not context.is_distributed or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.tensor([float(values[key]) for key in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(stacked)
    stacked /= context.world_size
    return dict(zip(keys, stacked.tolist()))


def all_reduce_sum(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Sum of ``tensor`` over the ranks (in place; returned for convenience)."""
    if context.is_distributed:
        dist.all_reduce(tensor)
    return tensor


class CodebookSync:
    """EMA codebook updates of a step made from the whole global batch (see the module docstring).

    Installed when the batch is spread over several ranks or several micro-batches (else the
    codebooks update in their forward pass, as the original does): each training forward of a
    :class:`~layers.vq.VectorQuantize` adds its increment of ``cluster_size`` and ``embed_avg`` to a
    running sum and puts the statistics back, so that every micro-batch is quantized with the
    codebook the step started with; :meth:`flush` then all-reduces the sums (one collective for all
    codebooks) and applies the update one process would have made on the global batch.

    Args:
        model: the generator.
        context: this process's place in the job.
        accumulate: the steps are cut into micro-batches.
    """

    def __init__(self, model: nn.Module, context: DistributedContext, accumulate: bool) -> None:
        self.context = context
        self.codebooks = [module for module in model.modules() if isinstance(module, VectorQuantize)]
        self.pending: dict[VectorQuantize, list[torch.Tensor]] = {}
        self.latest_inputs: dict[VectorQuantize, torch.Tensor] = {}
        self.handles: list[RemovableHandle] = []
        if self.codebooks and (context.is_distributed or accumulate):
            for module in self.codebooks:
                module.deferred_expiry = True
                self.handles.append(module.register_forward_pre_hook(self._remember))
                self.handles.append(module.register_forward_hook(self._accumulate))

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def _remember(self, module: VectorQuantize, inputs: tuple) -> None:
        module.initialise(inputs[0])  # before the state is kept: the step starts from the k-means codebook
        if module.training and module not in self.pending:
            state = (module.cluster_size, module.embed_avg, module.embed)
            self.pending[module] = [tensor.clone() for tensor in state] + [torch.zeros_like(t) for t in state[:2]]

    def _accumulate(self, module: VectorQuantize, inputs: tuple, _output: tuple) -> None:
        if not module.training or module not in self.pending:
            return
        self.latest_inputs[module] = inputs[0].detach()
        size_before, avg_before, embed_before, size_sum, avg_sum = self.pending[module]
        with torch.no_grad():
            # This micro-batch's increment is (1 - decay) * (its counts, its sums).
            size_sum += module.cluster_size - module.decay * size_before
            avg_sum += module.embed_avg - module.decay * avg_before
            module.cluster_size.copy_(size_before)
            module.embed_avg.copy_(avg_before)
            module.embed.copy_(embed_before)

    def flush(self) -> None:
        """Apply the step's codebook updates (every rank calls this after the same passes)."""
        if not self.pending:
            return
        modules = [module for module in self.codebooks if module in self.pending]
        with torch.no_grad():
            packed = torch.cat([torch.cat([self.pending[m][3].unsqueeze(0), self.pending[m][4]]).flatten()
                                for m in modules])
            all_reduce_sum(packed, self.context)
            offset = 0
            for module in modules:
                size_before, avg_before = self.pending[module][:2]
                rows = (1 + module.dim) * module.codebook_size
                summed = packed[offset : offset + rows].view(1 + module.dim, module.codebook_size)
                offset += rows
                module.cluster_size.copy_(module.decay * size_before + summed[0])
                module.embed_avg.copy_(module.decay * avg_before + summed[1:])
                # Same Laplace smoothing as VectorQuantize._ema_update.
                total = module.cluster_size.sum()
                smoothed = (module.cluster_size + module.eps) / (total + module.codebook_size * module.eps) * total
                module.embed.copy_(module.embed_avg / smoothed.unsqueeze(0))
                module.expire_dead_codes(self.latest_inputs[module], summed[0] > 0)
        self.pending.clear()
        self.latest_inputs.clear()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        for module in self.codebooks:
            module.deferred_expiry = False
        self.handles.clear()
        self.pending.clear()
        self.latest_inputs.clear()
