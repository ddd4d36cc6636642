"""Datasets over folders of audio files: one folder, or paired noisy/clean folders."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from dataloader.audio_files import AudioFile, collect_audio_files, read_header, read_training_audio

logger = logging.getLogger(__name__)


def _take_subset(files: list[Path], subset_num: int) -> list[Path]:
    """The first ``subset_num`` files, or all of them when ``subset_num`` is not positive."""
    return files[:subset_num] if subset_num > 0 else files


class _FileHeaders:
    """Lengths and channel counts of a dataset's files, each header read once (before training, so that
    an unreadable file or one of another shape stops the run with its name, not a loader worker)."""

    sampling_rate: int | None
    lengths: dict[Path, int]
    channels: dict[Path, int]

    def _paths(self) -> list[Path]:
        raise NotImplementedError

    def read_headers(self) -> None:
        for path in self._paths():
            if path not in self.lengths:
                self.lengths[path], self.channels[path] = read_header(path, self.sampling_rate)

    def check_channels(self, expected: int, model: str = "the model") -> None:
        """Raise a ValueError naming the first file that has not ``expected`` channels."""
        self.read_headers()
        for path in self._paths():
            if self.channels[path] != expected:
                raise ValueError(f"{path} has {self.channels[path]} channel(s) but {model} takes {expected}: "
                                 f"convert it to {expected} channel(s) or remove it from the data")


class AudioDataset(_FileHeaders, Dataset):
    """The audio files of one folder (searched recursively) or one list file.

    Items are float32 arrays of shape ``(T, C)``, or ``(name, audio)`` with ``return_name``, where
    ``name`` is the file name without folder and extension (the utterance id the test stage writes).
    With ``lazy`` an item is an :class:`AudioFile` instead, which decodes only the samples sliced
    from it (what a random-crop collater needs).

    Args:
        source: folder of wav/flac files, or a text file listing audio files one per line.
        sampling_rate: expected rate in Hz; a file at another rate raises a ValueError. None skips the check.
        return_name: also return the file name.
        subset_num: keep only the first ``subset_num`` files (sorted by path); -1 keeps all.
        what: how the source is named in error messages, e.g. ``"data.subset.train"``.
        lazy: items are :class:`AudioFile` (decoded when sliced) instead of arrays.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        sampling_rate: int | None = None,
        return_name: bool = False,
        subset_num: int = -1,
        what: str = "audio files",
        lazy: bool = False,
    ) -> None:
        self.source = Path(source)
        self.sampling_rate = sampling_rate
        self.return_name = return_name
        self.lazy = lazy
        self.files = _take_subset(collect_audio_files(source, what), subset_num)
        self.lengths: dict[Path, int] = {}  # samples per file, once a header was read
        self.channels: dict[Path, int] = {}

    def _paths(self) -> list[Path]:
        return self.files

    @property
    def names(self) -> list[str]:
        """File names without folder and extension, in item order."""
        return [path.stem for path in self.files]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray | AudioFile | tuple[str, np.ndarray | AudioFile]:
        path = self.files[index]
        if self.lazy:
            audio = AudioFile(path, self.lengths.get(path), self.sampling_rate)
        else:
            audio = read_training_audio(path, self.sampling_rate)
        return (path.stem, audio) if self.return_name else audio

    def keep_longer_than(self, num_samples: int) -> int:
        """Drop the files not longer than ``num_samples`` (read from file headers only).

        Returns:
            How many files were dropped.
        """
        self.read_headers()
        kept = [path for path in self.files if self.lengths[path] > num_samples]
        dropped = len(self.files) - len(kept)
        self.files = kept
        return dropped


def _pair_keys(source: Path, files: list[Path]) -> list[str]:
    """Keys that match a file with its partner: the path relative to the folder, without extension.

    Files named by a list file have no common folder, so they are matched by file name alone.
    """
    if source.is_dir():
        return [path.relative_to(source).with_suffix("").as_posix() for path in files]
    return [path.stem for path in files]


class PairedAudioDataset(_FileHeaders, Dataset):
    """Noisy/clean pairs from two folders, matched by their path relative to each folder.

    Items are ``(noisy, clean)`` float32 arrays of shape ``(T, C)``, or ``(name, noisy, clean)`` with
    ``return_name``. The noisy file is the model input, the clean one its target. With ``lazy`` the
    two are :class:`AudioFile` (decoded when sliced).

    Args:
        noisy_source: folder (or list file) of noisy audio.
        clean_source: folder (or list file) of clean audio with the same relative paths.
        sampling_rate: expected rate in Hz for both; None skips the check.
        return_name: also return the file name (without folder and extension).
        subset_num: keep only the first ``subset_num`` pairs; -1 keeps all.
        what: how the pair of sources is named in error messages.
        lazy: items are :class:`AudioFile` pairs instead of arrays.

    Raises:
        ValueError: a file in one folder has no partner in the other.
    """

    def __init__(
        self,
        noisy_source: str | os.PathLike,
        clean_source: str | os.PathLike,
        sampling_rate: int | None = None,
        return_name: bool = False,
        subset_num: int = -1,
        what: str = "audio pairs",
        lazy: bool = False,
    ) -> None:
        self.sampling_rate = sampling_rate
        self.return_name = return_name
        self.lazy = lazy
        self.lengths: dict[Path, int] = {}  # samples per file, once a header was read
        self.channels: dict[Path, int] = {}
        noisy_source, clean_source = Path(noisy_source), Path(clean_source)
        noisy_files = collect_audio_files(noisy_source, f"{what} (noisy)")
        clean_files = collect_audio_files(clean_source, f"{what} (clean)")
        noisy_by_key = dict(zip(_pair_keys(noisy_source, noisy_files), noisy_files))
        clean_by_key = dict(zip(_pair_keys(clean_source, clean_files), clean_files))
        self._check_matched(noisy_by_key, clean_by_key, noisy_source, clean_source)
        keys = _take_subset(sorted(noisy_by_key), subset_num)
        self.pairs: list[tuple[Path, Path]] = [(noisy_by_key[key], clean_by_key[key]) for key in keys]

    def _paths(self) -> list[Path]:
        return [path for pair in self.pairs for path in pair]

    @staticmethod
    def _check_matched(noisy: dict[str, Path], clean: dict[str, Path], noisy_source: Path, clean_source: Path) -> None:
        for own, other, own_source, other_source in (
            (noisy, clean, noisy_source, clean_source),
            (clean, noisy, clean_source, noisy_source),
        ):
            missing = sorted(set(own) - set(other))
            if missing:
                raise ValueError(
                    f"{own[missing[0]]} has no partner under {other_source} ({len(missing)} of {len(own)} files "
                    f"in {own_source} unmatched); noisy and clean folders must hold the same relative paths"
                )

    @property
    def names(self) -> list[str]:
        """File names of the noisy files without folder and extension, in item order."""
        return [noisy.stem for noisy, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> tuple:
        noisy_path, clean_path = self.pairs[index]
        if self.lazy:
            noisy = AudioFile(noisy_path, self.lengths.get(noisy_path), self.sampling_rate)
            clean = AudioFile(clean_path, self.lengths.get(clean_path), self.sampling_rate)
        else:
            noisy = read_training_audio(noisy_path, self.sampling_rate)
            clean = read_training_audio(clean_path, self.sampling_rate)
        return (noisy_path.stem, noisy, clean) if self.return_name else (noisy, clean)

    def drop_unequal_pairs(self, what: str = "the pairs") -> int:
        """Drop the pairs whose noisy and clean files differ in length, each named in a warning: the
        original's collater skips them (an aligned crop needs two files of one length).

        Returns:
            How many pairs were dropped.

        Raises:
            ValueError: every pair differs in length (naming the first and both lengths).
        """
        self.read_headers()
        kept = []
        for noisy_path, clean_path in self.pairs:
            noisy_length, clean_length = self.lengths[noisy_path], self.lengths[clean_path]
            if noisy_length == clean_length:
                kept.append((noisy_path, clean_path))
            else:
                logger.warning("Skipping %s: %d noisy vs %d clean samples", noisy_path, noisy_length, clean_length)
        if self.pairs and not kept:
            noisy_path, clean_path = self.pairs[0]
            raise ValueError(
                f"{what}: the noisy and clean files of every pair differ in length, e.g. {noisy_path} has "
                f"{self.lengths[noisy_path]} samples and {clean_path} {self.lengths[clean_path]}; pairs of "
                "unequal length are skipped: give clean files of their noisy files' length"
            )
        dropped = len(self.pairs) - len(kept)
        self.pairs = kept
        return dropped

    def keep_longer_than(self, num_samples: int) -> int:
        """Drop the pairs whose two files differ in length (:meth:`drop_unequal_pairs`) and the pairs not
        longer than ``num_samples``.

        Returns:
            How many pairs were dropped.
        """
        dropped = self.drop_unequal_pairs()
        kept = [(noisy, clean) for noisy, clean in self.pairs if self.lengths[noisy] > num_samples]
        dropped += len(self.pairs) - len(kept)
        self.pairs = kept
        return dropped
