"""The training data stream: the recipe's global batch shared by the ranks, in a reproducible order
that a resumed run picks up mid-epoch.

A config's ``batch_size`` is the global batch: the samples one optimizer step learns from, however
many processes train. :func:`plan_batches` shares it out: ``global batch 16 = 4 ranks x 4``; a share
that does not fit in memory is cut into micro-batches whose gradients are accumulated
(``micro_batch``), and a batch that does not divide by the ranks gives some ranks one sample more
(the trainer weights every micro-batch by its size, so each step's gradient is the mean over the
global batch either way). ``batch_size_per_rank`` instead sets each rank's share, for those who scale
the batch up with the ranks on purpose; the global batch is then ``ranks x batch_size_per_rank``.

Every epoch's order is a function of (seed, epoch) alone, and step ``s`` takes the ``s``-th slice
of ``batch_size`` samples of it; rank ``r`` reads every ``world_size``-th sample of the slice from
``r`` on, so the ranks together read exactly the batch one process reads (the order is the one
``DistributedSampler`` gives one process: one process trains as it always did). The stream remembers
how many steps of the current epoch it has handed out; a checkpoint stores ``(epoch, position)``,
and resuming skips those steps without loading or cropping them, so that with the random-number
state restored and ``num_workers: 0`` a resumed run sees the very batches the uninterrupted run would
have seen. (With worker processes the batch order is still reproduced, the random crops are not.)
"""

from __future__ import annotations

import logging
import math
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from dataloader import build_collater, build_datasets
from dataloader.audio_files import DataError
from trainer.distributed import DistributedContext
from trainer.preemption import STOP_SIGNALS
from utils.errors import CodecError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPlan:
    """How one step's global batch is shared: ``global_batch`` samples over ``world_size`` ranks, each
    rank's share cut into micro-batches of at most ``micro_batch`` samples."""

    global_batch: int
    world_size: int = 1
    micro_batch: int | None = None

    def shares(self, size: int | None = None) -> list[int]:
        """Samples of each rank in a step of ``size`` samples (default: the global batch)."""
        size = self.global_batch if size is None else size
        return [size // self.world_size + (rank < size % self.world_size) for rank in range(self.world_size)]

    @property
    def largest_micro_batch(self) -> int:
        return min(self.micro_batch or self.global_batch, max(self.shares()))

    @property
    def accumulation(self) -> int:
        """Micro-batches per step on the rank with the largest share."""
        return math.ceil(max(self.shares()) / self.largest_micro_batch)

    def describe(self) -> str:
        """E.g. ``global batch 16 = 4 ranks x 4``, with the accumulation when there is one."""
        shares = self.shares()
        share = str(shares[0]) if min(shares) == max(shares) else f"{min(shares)}-{max(shares)}"
        text = f"global batch {self.global_batch} = {self.world_size} ranks x {share}"
        if self.accumulation > 1:
            text += f" ({self.accumulation} micro-batches of <= {self.largest_micro_batch} accumulated per step)"
        return text


def plan_batches(
    config: Mapping[str, Any], world_size: int, batch_size_per_rank: int | None = None, micro_batch: int | None = None
) -> BatchPlan:
    """The batch plan of a run: the config's ``batch_size`` as the global batch, unless
    ``batch_size_per_rank`` (argument, else config key) sets each rank's share; ``micro_batch``
    (argument, else config key) caps the samples of one forward pass.

    Raises:
        CodecError: a size is not positive, or the global batch has fewer samples than there are ranks.
    """
    per_rank = batch_size_per_rank or config.get("batch_size_per_rank")
    micro = micro_batch or config.get("micro_batch")
    for name, value in (("batch_size_per_rank", per_rank), ("micro_batch", micro)):
        if value is not None and int(value) <= 0:
            raise CodecError(f"{name} must be a positive number of samples, not {value}")
    global_batch = int(per_rank) * world_size if per_rank else int(config["batch_size"])
    if global_batch < world_size:
        raise CodecError(
            f"batch_size {global_batch} is smaller than the {world_size} training processes: use fewer "
            "processes, or --batch_size_per_rank to give each process its own batch"
        )
    return BatchPlan(global_batch, world_size, int(micro) if micro else None)


class GlobalBatchSampler(Sampler[list[int]]):
    """This rank's share of every step's global batch (lists of dataset indices), epoch by epoch.

    Args:
        size: dataset size.
        plan: the batch plan.
        rank: this process's rank.
        shuffle: shuffle each epoch (``randperm`` seeded with ``seed + epoch``), else file order.
        seed: the run's seed.
    """

    def __init__(self, size: int, plan: BatchPlan, rank: int, shuffle: bool, seed: int) -> None:
        self.size = size
        self.plan = plan
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Hand out the steps of ``epoch`` from its ``start``-th step on."""
        self.epoch = epoch
        self.start = start

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.size / self.plan.global_batch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def step_indices(self, order: list[int], step: int) -> list[int]:
        """The global batch of ``step``: its slice of the order; a last slice with fewer samples than
        ranks is filled up from the start of the order, so that every rank has a share."""
        batch = self.plan.global_batch
        indices = order[step * batch : (step + 1) * batch]
        while len(indices) < self.plan.world_size:
            indices += order[: self.plan.world_size - len(indices)]
        return indices

    def global_size(self, step: int) -> int:
        """Samples in the global batch of ``step`` of the epoch (the length :meth:`step_indices` gives)."""
        remaining = self.size - step * self.plan.global_batch
        return max(min(self.plan.global_batch, remaining), self.plan.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self._order()
        for step in range(self.start, self.steps_per_epoch):
            yield self.step_indices(order, step)[self.rank :: self.plan.world_size]

    def __len__(self) -> int:
        return max(self.steps_per_epoch - self.start, 0)


class StepBatch(NamedTuple):
    """One step's data on this rank: its share of the batch, and the size of the global batch."""

    data: Any
    global_size: int


def _ignore_stop_signals(worker_id: int) -> None:
    """A loader worker's start: the stop signals are the training process's to act on (it checkpoints, then
    shuts its workers down). SLURM signals every process of a job, and a worker that died of one would fail
    the run before its checkpoint."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _loader(dataset: Dataset, config: Mapping[str, Any], collate, seed: int, **sampling: Any) -> DataLoader:
    num_workers = int(config.get("num_workers", 0))
    return DataLoader(
        dataset,
        collate_fn=collate,
        num_workers=num_workers,
        worker_init_fn=_ignore_stop_signals,
        pin_memory=bool(config.get("pin_memory", False)) and torch.cuda.is_available(),
        # Workers live for the whole phase: re-spawning them every epoch stalls the GPU.
        persistent_workers=num_workers > 0,
        # A generator of its own keeps the loader from drawing on torch's global one.
        generator=torch.Generator().manual_seed(seed),
        **sampling,
    )


class _LoaderError(NamedTuple):
    """A data error met in a loader worker, carried to the training process as a batch."""

    message: str


class _ReportingCollater:
    """A collater whose data errors (a file that cannot be read, NaN samples) reach the training process
    as values: raised in a loader worker, they would arrive as a worker's traceback, not as the one line
    that names the file and the fix."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, batch: Any) -> Any:
        try:
            return self.collate(batch)
        except DataError as error:
            return _LoaderError(str(error))


def _checked(loader: DataLoader) -> Iterator[Any]:
    for batch in loader:
        if isinstance(batch, _LoaderError):
            raise DataError(batch.message)
        yield batch


class TrainingData:
    """Training steps (endless, epoch after epoch) and the validation loader of a recipe's config.

    Args:
        config: recipe config (``data``, ``num_workers``, ``pad_short``, ...).
        context: this process's place in the job.
        seed: the run's seed; epoch ``e`` is shuffled with ``seed + e``.
        plan: how the global batch is shared (default: the config's ``batch_size`` on this job's ranks).
    """

    def __init__(
        self, config: Mapping[str, Any], context: DistributedContext, seed: int, plan: BatchPlan | None = None
    ) -> None:
        self.config = config
        self.context = context
        self.seed = seed
        self.plan = plan or plan_batches(config, context.world_size)
        self.epoch = 0
        self.position = 0
        self.batch_length: int | None = None
        self.train_loader: DataLoader | None = None
        self.dev_loader: DataLoader | None = None

    def set_batch_length(self, batch_length: int) -> None:
        """(Re)build the datasets with crops of ``batch_length`` samples; the position is kept."""
        if batch_length == self.batch_length:
            return
        try:
            datasets = build_datasets(self.config, batch_length)
        except (FileNotFoundError, ValueError) as error:  # the data's errors, in the adversarial phase too
            raise CodecError(str(error)) from None
        collate = _ReportingCollater(build_collater(self.config, batch_length))
        train_sampler = GlobalBatchSampler(len(datasets["train"]), self.plan, self.context.rank, True, self.seed)
        dev_sampler = DistributedSampler(
            datasets["dev"], num_replicas=self.context.world_size, rank=self.context.rank, shuffle=False
        )
        self.train_loader = _loader(datasets["train"], self.config, collate, self.seed, batch_sampler=train_sampler)
        self.dev_loader = _loader(
            datasets["dev"], self.config, collate, self.seed, sampler=dev_sampler,
            batch_size=self.plan.largest_micro_batch,
        )  # fmt: skip
        self.batch_length = batch_length
        logger.info("%s, crops of %d samples", self.plan.describe(), batch_length)

    def batches(self) -> Iterator[StepBatch]:
        """This rank's share of every step from the current (epoch, position) on, forever."""
        if self.train_loader is None:
            raise RuntimeError("call set_batch_length before reading batches")
        sampler: GlobalBatchSampler = self.train_loader.batch_sampler
        while True:
            sampler.set_position(self.epoch, self.position)
            for batch in _checked(self.train_loader):
                global_size = sampler.global_size(self.position)
                self.position += 1
                yield StepBatch(batch, global_size)
            self.epoch += 1
            self.position = 0

    def dev_batches(self) -> Iterator[Any]:
        """This rank's share of the validation set, batch by batch."""
        if self.dev_loader is None:
            raise RuntimeError("call set_batch_length before reading batches")
        return _checked(self.dev_loader)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
