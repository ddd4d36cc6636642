"""Multi-process training with PyTorch DDP, as launched by ``torchrun``.

``torchrun`` sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE``; without them training runs in one
process. Backend: NCCL on GPUs, gloo on CPUs. Every rank reads its share of each batch (a
``DistributedSampler``), DDP averages the gradients, and only rank 0 logs and writes files.

EMA codebooks. The residual VQ updates its codebooks from the vectors it sees, in place, during the
forward pass; under DDP each rank would update from its own share of the batch and the ranks'
codebooks would drift apart (DDP's buffer broadcast would then silently keep rank 0's and drop the
other ranks' data). :func:`sync_ema_codebooks` makes the update use the whole global batch instead:
a hook keeps each codebook's statistics from before the forward pass, and after it all-reduces the
per-rank increments of ``cluster_size`` and ``embed_avg`` and recomputes ``embed`` from the sums,
which is exactly the update one process would make on the global batch. Buffers are therefore kept
equal on all ranks explicitly, and the generator is wrapped with ``broadcast_buffers=False``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.hooks import RemovableHandle

from layers.vq import VectorQuantize

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


def init_distributed() -> DistributedContext:
    """Join the process group ``torchrun`` describes in the environment, or run alone.

    Returns:
        The context: rank, local rank, world size and the device this process trains on
        (``cuda:<LOCAL_RANK>`` when CUDA exists, else the CPU).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = torch.cuda.is_available()
    if world_size <= 1:
        return DistributedContext(device=torch.device("cuda" if use_cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    logger.info("DDP: rank %d of %d (local rank %d) on %s", rank, world_size, local_rank, device)
    return DistributedContext(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def shutdown_distributed() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(model: nn.Module, context: DistributedContext) -> nn.Module:
    """``model`` in DDP when distributed (only its parameters that require grad are reduced), else itself.

    Wrap again after freezing parameters: DDP expects a gradient for every parameter that required
    one when it was built.
    """
    if not context.is_distributed or not any(p.requires_grad for p in model.parameters()):
        return model
    device_ids = [context.device.index] if context.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


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


def _remember_statistics(module: VectorQuantize, _inputs: tuple) -> None:
    if module.training:
        module._statistics_before = (module.cluster_size.clone(), module.embed_avg.clone())


def _global_ema_update(module: VectorQuantize, _inputs: tuple, _output: tuple) -> None:
    before = getattr(module, "_statistics_before", None)
    if before is None:
        return
    module._statistics_before = None
    cluster_size_before, embed_avg_before = before
    with torch.no_grad():
        # Each rank's increment is (1 - decay) * (its counts, its sums): summing the increments
        # gives the update of the global batch.
        size_increment = module.cluster_size - module.decay * cluster_size_before
        avg_increment = module.embed_avg - module.decay * embed_avg_before
        packed = torch.cat([size_increment.unsqueeze(0), avg_increment])
        dist.all_reduce(packed)
        module.cluster_size.copy_(module.decay * cluster_size_before + packed[0])
        module.embed_avg.copy_(module.decay * embed_avg_before + packed[1:])
        # Same Laplace smoothing as VectorQuantize._ema_update.
        total = module.cluster_size.sum()
        smoothed = (module.cluster_size + module.eps) / (total + module.codebook_size * module.eps) * total
        module.embed.copy_(module.embed_avg / smoothed.unsqueeze(0))


def sync_ema_codebooks(model: nn.Module, context: DistributedContext) -> list[RemovableHandle]:
    """Make every EMA codebook of ``model`` update from the global batch (see the module docstring).

    Returns:
        The hook handles (none when not distributed).
    """
    if not context.is_distributed:
        return []
    handles = []
    for module in model.modules():
        if isinstance(module, VectorQuantize):
            module._statistics_before = None
            handles.append(module.register_forward_pre_hook(_remember_statistics))
            handles.append(module.register_forward_hook(_global_ema_update))
    return handles
