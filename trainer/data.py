"""The training data stream: a reproducible batch order that a resumed run can pick up mid-epoch.

Every epoch's order is a function of (seed, epoch) alone (a ``DistributedSampler``, also for one
process), and the stream remembers how many batches of the current epoch it has handed out. A
checkpoint stores ``(epoch, position)``; resuming skips exactly those samples in the sampler, without
loading or cropping them, so that with the random-number state restored and ``num_workers: 0`` the
resumed run sees the very batches the uninterrupted run would have seen. (With worker processes the
batch order is still reproduced, the random crops are not.)

With ``world_size`` ranks each rank reads every ``world_size``-th sample of the epoch's order, so the
union of the ranks' batches at one step is the batch one process with ``world_size`` times the batch
size reads (when the dataset size is a multiple of the global batch size).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dataloader import build_collater, build_datasets
from trainer.distributed import DistributedContext

logger = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """A ``DistributedSampler`` whose epoch can start after its first ``start`` samples."""

    def __init__(self, dataset: Dataset, context: DistributedContext, shuffle: bool, seed: int) -> None:
        super().__init__(dataset, num_replicas=context.world_size, rank=context.rank, shuffle=shuffle, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Sample the order of ``epoch`` from its ``start``-th sample (of this rank) on."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return max(super().__len__() - self.start, 0)


def _loader(dataset: Dataset, sampler: ResumableSampler, config: Mapping[str, Any], collate, seed: int) -> DataLoader:
    num_workers = int(config.get("num_workers", 0))
    return DataLoader(
        dataset,
        batch_size=int(config["batch_size"]),
        sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=bool(config.get("pin_memory", False)) and torch.cuda.is_available(),
        persistent_workers=False,
        # A generator of its own keeps the loader from drawing on torch's global one.
        generator=torch.Generator().manual_seed(seed),
    )


class TrainingData:
    """Training batches (endless, epoch after epoch) and the validation loader of a recipe's config.

    Args:
        config: recipe config (``data``, ``batch_size``, ``num_workers``, ``pad_short``, ...).
        context: this process's place in the job.
        seed: the run's seed; epoch ``e`` is shuffled with ``seed + e``.
    """

    def __init__(self, config: Mapping[str, Any], context: DistributedContext, seed: int) -> None:
        self.config = config
        self.context = context
        self.seed = seed
        self.epoch = 0
        self.position = 0
        self.batch_length: int | None = None
        self.train_loader: DataLoader | None = None
        self.dev_loader: DataLoader | None = None

    def set_batch_length(self, batch_length: int) -> None:
        """(Re)build the datasets with crops of ``batch_length`` samples; the position is kept."""
        if batch_length == self.batch_length:
            return
        datasets = build_datasets(self.config, batch_length)
        collate = build_collater(self.config, batch_length)
        train_sampler = ResumableSampler(datasets["train"], self.context, shuffle=True, seed=self.seed)
        dev_sampler = ResumableSampler(datasets["dev"], self.context, shuffle=False, seed=self.seed)
        self.train_loader = _loader(datasets["train"], train_sampler, self.config, collate, self.seed)
        self.dev_loader = _loader(datasets["dev"], dev_sampler, self.config, collate, self.seed)
        self.batch_length = batch_length
        logger.info("Batches of %d x %d samples", int(self.config["batch_size"]), batch_length)

    def batches(self) -> Iterator[Any]:
        """Training batches from the current (epoch, position) on, forever."""
        if self.train_loader is None:
            raise RuntimeError("call set_batch_length before reading batches")
        while True:
            sampler = self.train_loader.sampler
            sampler.set_position(self.epoch, self.position * self.train_loader.batch_size)
            for batch in self.train_loader:
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
