"""Collaters that cut random fixed-length crops from variable-length audio and stack them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class AudioCollater:
    """Cut one random crop of ``batch_length`` samples from each item and stack them.

    Files not longer than ``batch_length`` are skipped, as in the original recipes; with
    ``pad_short`` they are kept instead, whole, and zero-padded at the end.

    Start offsets are drawn from torch's random generator, which the DataLoader seeds differently in
    each worker process (numpy's global generator would repeat the same crops in every worker).

    Args:
        batch_length: samples per crop; keep it a multiple of the hop size.
        pad_short: pad files not longer than the crop instead of skipping them.
    """

    def __init__(self, batch_length: int, pad_short: bool = False) -> None:
        if batch_length <= 0:
            raise ValueError(f"batch_length must be a positive number of samples, got {batch_length}")
        self.batch_length = batch_length
        self.pad_short = pad_short

    def _usable(self, length: int) -> bool:
        return self.pad_short or length > self.batch_length

    def _random_start(self, length: int) -> int:
        """A crop start in ``[0, length - batch_length]``, or 0 for a file that will be padded."""
        if length <= self.batch_length:
            return 0
        return int(torch.randint(0, length - self.batch_length + 1, ()).item())

    def _crop(self, audio: np.ndarray, start: int) -> torch.Tensor:
        """Crop ``(T, C)`` samples from ``start`` into a ``(C, batch_length)`` float tensor, zero-padded."""
        segment = torch.as_tensor(np.asarray(audio[start : start + self.batch_length], dtype=np.float32))
        segment = segment.transpose(0, 1)
        missing = self.batch_length - segment.shape[-1]
        return torch.nn.functional.pad(segment, (0, missing)) if missing > 0 else segment

    def _no_usable_item(self, batch_size: int) -> ValueError:
        return ValueError(
            f"none of the {batch_size} files in this batch is longer than batch_length={self.batch_length} samples; "
            "lower batch_length or set pad_short: true in the config"
        )

    def __call__(self, batch: Sequence[np.ndarray]) -> torch.Tensor:
        """Stack random crops.

        Args:
            batch: audio of shape ``(T, C)``: arrays, or :class:`~dataloader.audio_files.AudioFile` (which
                decodes only the crop).

        Returns:
            Crops of shape ``(B, C, batch_length)``, float32, where B counts the items kept.
        """
        kept = [audio for audio in batch if self._usable(len(audio))]
        if not kept:
            raise self._no_usable_item(len(batch))
        return torch.stack([self._crop(audio, self._random_start(len(audio))) for audio in kept])


class PairedAudioCollater(AudioCollater):
    """Cut the same random crop from the noisy and the clean file of each pair.

    Pairs whose two files differ in length are skipped, as are pairs not longer than the crop
    (unless ``pad_short``).
    """

    def __call__(self, batch: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stack aligned random crops.

        Args:
            batch: ``(noisy, clean)`` pairs of arrays of shape ``(T, C)``.

        Returns:
            ``(noisy, clean)`` crops, each of shape ``(B, C, batch_length)``: the model input, then its target.
        """
        kept = [(noisy, clean) for noisy, clean in batch if len(noisy) == len(clean) and self._usable(len(noisy))]
        if not kept:
            raise self._no_usable_item(len(batch))
        starts = [self._random_start(len(noisy)) for noisy, _ in kept]
        noisy_batch = torch.stack([self._crop(noisy, start) for (noisy, _), start in zip(kept, starts)])
        clean_batch = torch.stack([self._crop(clean, start) for (_, clean), start in zip(kept, starts)])
        return noisy_batch, clean_batch
