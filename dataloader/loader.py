"""Build the training and validation DataLoaders a recipe's config describes.

The config keys read here are those of the original recipes::

    sampling_rate: 48000
    data: {path: corpus, subset: {train: train, valid: dev, test: test}}
    train_mode: autoencoder        # or vocoder; denoise reads noisy_/clean_ subsets
    batch_size: 16                 # the global batch (trainer/data.py splits it across ranks)
    batch_length: 9600             # samples per random crop
    num_workers: 2
    pin_memory: true
    pad_short: false               # ours: pad files not longer than the crop instead of skipping them
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dataloader.collater import AudioCollater, PairedAudioCollater
from dataloader.dataset import AudioDataset, PairedAudioDataset

logger = logging.getLogger(__name__)

# For each train mode, the data.subset keys of the training and validation sets: one key for a
# single folder, (noisy, clean) keys for pairs.
SUBSET_KEYS: dict[str, dict[str, tuple[str, ...]]] = {
    "autoencoder": {"train": ("train",), "dev": ("valid",)},
    "vocoder": {"train": ("train",), "dev": ("valid",)},
    "denoise": {"train": ("noisy_train", "clean_train"), "dev": ("noisy_valid", "clean_valid")},
}


def subset_path(config: Mapping[str, Any], subset: str) -> Path:
    """The folder (or list file) of ``data.subset.<subset>``, joined to ``data.path``.

    Raises:
        ValueError: the config has no ``data`` with ``path`` and ``subset``, or no such subset.
    """
    data = config.get("data")
    if not isinstance(data, Mapping) or "path" not in data or not isinstance(data.get("subset"), Mapping):
        raise ValueError(f"data needs a path and a subset mapping: add data: {{path: <corpus folder>, subset: "
                         f"{{{subset}: <folder or list file under path>}}}}")
    subsets = data["subset"]
    if subset not in subsets:
        raise ValueError(f"config data.subset has no '{subset}' entry (it has {', '.join(subsets)}); add it")
    return Path(data["path"]) / subsets[subset]


def build_dataset(
    config: Mapping[str, Any], subset: str, return_name: bool = False, subset_num: int = -1, lazy: bool = False
) -> AudioDataset:
    """The audio files of ``data.subset.<subset>``, checked against the config's ``sampling_rate``."""
    return AudioDataset(
        subset_path(config, subset),
        sampling_rate=config.get("sampling_rate"),
        return_name=return_name,
        subset_num=subset_num,
        what=f"data.subset.{subset}",
        lazy=lazy,
    )


def build_paired_dataset(
    config: Mapping[str, Any],
    noisy_subset: str,
    clean_subset: str,
    return_name: bool = False,
    subset_num: int = -1,
    lazy: bool = False,
) -> PairedAudioDataset:
    """Noisy/clean pairs of ``data.subset.<noisy_subset>`` and ``data.subset.<clean_subset>``."""
    return PairedAudioDataset(
        subset_path(config, noisy_subset),
        subset_path(config, clean_subset),
        sampling_rate=config.get("sampling_rate"),
        return_name=return_name,
        subset_num=subset_num,
        what=f"data.subset.{noisy_subset}/{clean_subset}",
        lazy=lazy,
    )


def train_mode(config: Mapping[str, Any]) -> str:
    """The config's ``train_mode`` (default autoencoder), checked."""
    mode = config.get("train_mode", "autoencoder")
    if mode not in SUBSET_KEYS:
        raise ValueError(f"train_mode '{mode}' is not one of {', '.join(SUBSET_KEYS)}; fix train_mode in the config")
    return mode


def model_channels(config: Mapping[str, Any]) -> tuple[int, str]:
    """The audio channels the config's model trains on, and how errors name it: the autoencoder's
    input (its output reconstructs it), or the vocoder's output."""
    params = config.get("generator_params") or {}
    if train_mode(config) == "vocoder":
        return int(params.get("out_channels", 1)), "the vocoder (generator_params.out_channels)"
    return int(params.get("input_channels", 1)), "the model (generator_params.input_channels)"


def build_datasets(config: Mapping[str, Any], batch_length: int | None = None) -> dict[str, Dataset]:
    """The ``'train'`` and ``'dev'`` datasets of the config's train mode.

    Unless ``pad_short`` is set, files not longer than ``batch_length`` are dropped here, from their
    headers, so that no batch comes out empty. Items are :class:`~dataloader.audio_files.AudioFile`:
    the collater decodes only the crop it cuts.

    Args:
        config: recipe config.
        batch_length: crop length in samples; defaults to the config's ``batch_length``.

    Raises:
        ValueError: a set is empty, or every file in it is too short for the crop; a file cannot be read
            as audio, or has another sampling rate or channel count than the model's.
    """
    batch_length = batch_length or config["batch_length"]
    datasets: dict[str, Dataset] = {}
    for split, keys in SUBSET_KEYS[train_mode(config)].items():
        if len(keys) == 1:
            dataset = build_dataset(config, *keys, lazy=True)
        else:
            dataset = build_paired_dataset(config, *keys, lazy=True)
        dataset.check_channels(*model_channels(config))
        if isinstance(dataset, PairedAudioDataset):
            dataset.drop_unequal_pairs(f"data.subset.{'/'.join(keys)}")
        if not config.get("pad_short", False):
            total = len(dataset)
            dropped = dataset.keep_longer_than(batch_length)
            if dropped:
                logger.info(
                    "%s: skipped %d of %d files not longer than %d samples",
                    split,
                    dropped,
                    total,
                    batch_length,
                )
            if not len(dataset):
                raise ValueError(
                    f"data.subset.{'/'.join(keys)}: none of the {total} files is longer than batch_length="
                    f"{batch_length} samples; lower batch_length or set pad_short: true in the config"
                )
        logger.info("The number of %s files = %d.", split, len(dataset))
        datasets[split] = dataset
    return datasets


def build_collater(config: Mapping[str, Any], batch_length: int | None = None) -> AudioCollater:
    """The collater of the config's train mode: single crops, or aligned noisy/clean crops for denoise."""
    collater_class = PairedAudioCollater if train_mode(config) == "denoise" else AudioCollater
    return collater_class(batch_length or config["batch_length"], pad_short=config.get("pad_short", False))


def build_data_loaders(
    config: Mapping[str, Any],
    batch_length: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
) -> dict[str, DataLoader]:
    """The ``'train'`` (shuffled) and ``'dev'`` DataLoaders of a recipe's config.

    With ``world_size > 1`` each loader reads only its rank's share through a ``DistributedSampler``;
    ``batch_size`` is then per process, and the training loop must call
    ``loader.sampler.set_epoch(epoch)`` at the start of each epoch to reshuffle.

    Args:
        config: recipe config (see the module docstring for the keys read).
        batch_length: crop length in samples; defaults to the config's ``batch_length`` (the
            adversarial phase passes ``adv_batch_length``).
        rank: this process's rank among ``world_size``.
        world_size: number of training processes.
        seed: shuffling seed of the distributed sampler, the same on every rank.

    Returns:
        ``{'train': DataLoader, 'dev': DataLoader}`` yielding ``(B, C, batch_length)`` float tensors,
        or ``(noisy, clean)`` pairs of them for denoise.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size} processes")
    datasets = build_datasets(config, batch_length)
    collater = build_collater(config, batch_length)
    num_workers = int(config.get("num_workers", 0))
    loaders = {}
    for split, dataset in datasets.items():
        shuffle = split == "train"
        sampler = (
            DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed)
            if world_size > 1
            else None
        )
        loaders[split] = DataLoader(
            dataset,
            batch_size=config["batch_size"],
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            collate_fn=collater,
            num_workers=num_workers,
            pin_memory=bool(config.get("pin_memory", False)) and torch.cuda.is_available(),
            persistent_workers=num_workers > 0,
        )
    return loaders
