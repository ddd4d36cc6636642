"""The frozen AudioDec encoder ("analyzer") whose quantized latent feeds a vocoder, and the statistics
of that latent which normalize the vocoder's input."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from dataloader import build_dataset
from utils.checkpoint import check_hop_pair, load_autoencoder
from utils.errors import CodecError
from utils.files import atomic_output, make_output_folder

logger = logging.getLogger(__name__)


def load_analyzer(
    checkpoint: str, sample_rate: int | None = None, code_dim: int | None = None, hop_length: int | None = None
) -> nn.Module:
    """The AudioDec generator of ``checkpoint``, in eval mode with gradients off; where given, it must
    code audio at ``sample_rate`` into latents of ``code_dim`` channels, one frame per ``hop_length``
    samples (what the recipe reads, feeds and makes of each frame).

    Raises:
        CodecError: no such checkpoint, not an AudioDec autoencoder, or another rate, latent size or hop.
    """
    if not checkpoint or not Path(checkpoint).is_file():
        raise CodecError(
            f"analyzer checkpoint '{checkpoint}' not found: train the autoencoder first or fix 'analyzer' in the config"
        )
    analyzer, config = load_autoencoder(checkpoint, role="analyzer")
    rate = int(config["sampling_rate"])
    if sample_rate is not None and rate != int(sample_rate):
        raise CodecError(f"the analyzer {checkpoint} codes {rate} Hz audio but the recipe's sampling_rate is "
                         f"{sample_rate}: give an analyzer trained at {sample_rate} Hz")
    latent = int(config["generator_params"]["code_dim"])
    if code_dim is not None and latent != int(code_dim):
        raise CodecError(f"the analyzer {checkpoint} gives latents of {latent} channels but the vocoder takes "
                         f"{code_dim} (generator_params.in_channels): make them equal")
    if hop_length is not None:
        check_hop_pair(analyzer.hop_length, hop_length, f"the analyzer {checkpoint} and the vocoder's upsample_scales")
    logger.info("Loaded the analyzer from %s", checkpoint)
    return analyzer


@torch.no_grad()
def quantized_latent(analyzer: nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """Audio (B, C, T) -> quantized latent (B, code_dim, T / hop), offline.

    encoder -> projector -> the quantizer's forward pass in eval mode, exactly what the original's
    vocoder trainer and statistics stage feed the vocoder (the straight-through sum of the residual
    stages; equal to the codebook lookup of the codes up to float rounding).
    """
    latent, _, _ = analyzer.quantizer(analyzer.projector(analyzer.encoder(audio)))
    return latent


class RunningStatistics:
    """Mean and standard deviation per channel, accumulated in float64 over batches of rows."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def update(self, rows: np.ndarray) -> None:
        """Add rows (N, D)."""
        rows = np.asarray(rows, dtype=np.float64)
        count = rows.shape[0]
        if count == 0:
            return
        batch_mean = rows.mean(axis=0)
        batch_m2 = ((rows - batch_mean) ** 2).sum(axis=0)
        if self.mean is None:
            self.count, self.mean, self.m2 = count, batch_mean, batch_m2
            return
        total = self.count + count
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * count / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * count / total
        self.count = total

    def scale(self) -> np.ndarray:
        """Population standard deviation; 1 where a channel is constant up to float error (as
        scikit-learn's ``StandardScaler``, which the original uses)."""
        variance = self.m2 / self.count
        eps = np.finfo(np.float64).eps
        constant = variance <= self.count * eps * variance + (self.count * self.mean * eps) ** 2
        return np.where(constant, 1.0, np.sqrt(variance))


def compute_code_statistics(
    config: Mapping[str, Any], subset: str = "train", subset_num: int = -1, device: str | torch.device = "cpu"
) -> np.ndarray:
    """Mean and scale of the analyzer's quantized latent over the files of ``data.subset.<subset>``.

    Args:
        config: statistics recipe (``analyzer``, ``data``, ``sampling_rate``).
        subset: which ``data.subset`` entry to read.
        subset_num: only the first ``subset_num`` files; -1 all.
        device: where the analyzer runs.

    Returns:
        float32 array (2, code_dim): row 0 the mean, row 1 the scale (standard deviation).
    """
    analyzer = load_analyzer(config.get("analyzer", ""), config.get("sampling_rate")).to(device)
    try:
        dataset = build_dataset(config, subset, subset_num=subset_num)
        dataset.check_channels(analyzer.input_channels, "the analyzer (its generator_params.input_channels)")
        empty = dataset.keep_longer_than(0)
    except (FileNotFoundError, ValueError) as error:
        raise CodecError(str(error)) from None
    if empty:  # as training skips them
        logger.warning("data.subset.%s: skipped %d file(s) holding no samples", subset, empty)
    logger.info("The number of %s audio files = %d.", subset, len(dataset))
    statistics = RunningStatistics()
    for audio in tqdm(dataset, desc="[statistic]"):
        signal = torch.from_numpy(np.ascontiguousarray(audio.T)).unsqueeze(0).to(device)  # (1, C, T)
        latent = quantized_latent(analyzer, signal)  # (1, D, T')
        statistics.update(latent[0].transpose(0, 1).double().cpu().numpy())
    if statistics.mean is None:
        raise CodecError(f"data.subset.{subset}: the files are too short to give a single frame")
    logger.info("Finished the statistics of %d utterances (%d frames).", len(dataset), statistics.count)
    return np.stack([statistics.mean, statistics.scale()]).astype(np.float32)


def statistics_path(path: str | Path) -> Path:
    """Where ``np.save(path)`` writes, as the original saves: ``.npy`` appended when missing."""
    path = Path(path)
    return path if path.suffix == ".npy" else path.with_name(path.name + ".npy")


def save_statistics(stats: np.ndarray, path: str | Path) -> None:
    """Write (2, code_dim) statistics to ``path`` (.npy), creating its folder; never half-written."""
    target = statistics_path(path)
    make_output_folder(target.parent, "the config's stats", given=path)
    with atomic_output(target, ".npy") as tmp:
        np.save(tmp, stats.astype(np.float32), allow_pickle=False)
