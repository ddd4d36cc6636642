"""Causal HiFi-GAN vocoder: codes' latent (B, code_dim, T) -> waveform (B, 1, T * prod(upsample_scales)).

Input normalization `(c - mean) / scale` uses statistics stored as buffers, so a trained
checkpoint carries them: inference never needs the `stats/*.npy` file the config names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from layers.activation import get_activation
from layers.conv import CausalConv1d, CausalConvTranspose1d
from layers.weight_norm import apply_weight_norm
from models.vocoder.modules.residual_block import MultiGroupConv1d, MultiReceptiveField


class StatisticsFileError(Exception):
    """A statistics file that is there but holds no statistics array (not a ValueError: the config
    builders report those as settings the class refuses, and this is the file's fault)."""


def load_stats(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a statistics file (.npy, row 0 mean, row 1 scale) -> (mean, scale) float32 vectors.

    Raises:
        FileNotFoundError: no such file.
        StatisticsFileError: not a .npy array of two numeric rows.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"statistics file {path} not found: run the statistics stage (codecStatistic.py) first"
        )
    try:
        stats = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):  # not .npy: pickled objects, text, a truncated header
        stats = None
    if not isinstance(stats, np.ndarray) or stats.ndim < 1 or stats.shape[0] != 2 or stats.dtype.kind not in "fiu":
        raise StatisticsFileError(
            f"statistics file {path} is not a .npy array of statistics (2 rows: mean, scale): write it with the "
            "statistics stage (codecStatistic.py) or fix generator_params.stats"
        )
    return stats[0].reshape(-1).astype(np.float32), stats[1].reshape(-1).astype(np.float32)


class Generator(nn.Module):
    """HiFi-GAN generator; kwargs are the config's `generator_params`.

    `stats`: path of the statistics file; when given, inputs are normalized. With
    `load_stats=False` the statistics buffers are created empty-valued (zeros / ones) and are
    expected to come from a checkpoint — what inference does.
    """

    def __init__(
        self,
        in_channels: int = 80,
        out_channels: int = 1,
        channels: int = 512,
        kernel_size: int = 7,
        upsample_scales: Sequence[int] = (8, 8, 2, 2),
        upsample_kernel_sizes: Sequence[int] = (16, 16, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        groups: int = 1,
        bias: bool = True,
        use_additional_convs: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: dict | None = None,
        use_weight_norm: bool = True,
        stats: str | None = None,
        load_stats: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if len(upsample_scales) != len(upsample_kernel_sizes):
            raise ValueError("upsample_scales and upsample_kernel_sizes must have the same length")
        if len(resblock_dilations) != len(resblock_kernel_sizes):
            raise ValueError("resblock_dilations and resblock_kernel_sizes must have the same length")
        params = {"negative_slope": 0.1} if nonlinear_activation_params is None else nonlinear_activation_params
        grouped = len(resblock_kernel_sizes) == 1 and groups > 1
        fusion = MultiGroupConv1d if grouped else MultiReceptiveField
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.hop_length = int(np.prod(upsample_scales))
        self.input_conv = CausalConv1d(in_channels, channels, kernel_size)
        self.activation_upsamples = get_activation(nonlinear_activation, params)
        self.upsamples = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for i, (scale, kernel) in enumerate(zip(upsample_scales, upsample_kernel_sizes)):
            if kernel != 2 * scale:
                raise ValueError(f"upsample kernel {kernel} must be twice its scale {scale}")
            self.upsamples.append(CausalConvTranspose1d(channels // 2**i, channels // 2 ** (i + 1), kernel, scale))
            self.blocks.append(
                fusion(
                    channels=channels // 2 ** (i + 1), resblock_kernel_sizes=resblock_kernel_sizes,
                    resblock_dilations=resblock_dilations, groups=groups, bias=bias,
                    use_additional_convs=use_additional_convs, nonlinear_activation=nonlinear_activation,
                    nonlinear_activation_params=params,
                )
            )
        self.activation_output1 = nn.LeakyReLU()
        self.activation_output2 = nn.Tanh()
        self.output_conv = CausalConv1d(channels // 2 ** len(upsample_scales), out_channels, kernel_size)
        self.norm = stats is not None
        if self.norm:
            if load_stats:
                mean, scale = load_stats_from(stats, in_channels)
            else:
                mean, scale = np.zeros(in_channels, np.float32), np.ones(in_channels, np.float32)
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("scale", torch.from_numpy(scale))
        if use_weight_norm:
            apply_weight_norm(self)

    def _normalize(self, c: torch.Tensor) -> torch.Tensor:
        if not self.norm:
            return c
        return (c - self.mean.view(1, -1, 1)) / self.scale.view(1, -1, 1)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        """Offline pass: latent (B, in_channels, T) -> waveform (B, out_channels, T * hop)."""
        c = self.input_conv(self._normalize(c))
        for upsample, block in zip(self.upsamples, self.blocks):
            c = block(upsample(self.activation_upsamples(c)))
        return self.activation_output2(self.output_conv(self.activation_output1(c)))

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        """Streaming step: latent chunk (B, in_channels, T) -> waveform chunk (B, out_channels, T * hop)."""
        c = self.input_conv.step(self._normalize(c))
        for upsample, block in zip(self.upsamples, self.blocks):
            c = block.step(upsample.step(self.activation_upsamples(c)))
        return self.activation_output2(self.output_conv.step(self.activation_output1(c)))


def load_stats_from(path: str, in_channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Statistics of `path`, checked against the vocoder's input width."""
    mean, scale = load_stats(path)
    if mean.shape[0] != in_channels or scale.shape[0] != in_channels:
        raise ValueError(f"statistics in {path} have width {mean.shape[0]}, the vocoder takes {in_channels}")
    return mean, scale
