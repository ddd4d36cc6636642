"""AudioDec encoder: conv k=7, then blocks of 3 residual units + strided conv (kernel 2*stride)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layers.activation import get_activation
from models.autoencoder.modules.residual_unit import ResidualUnit, conv1d_for_mode


class EncoderBlock(nn.Module):
    """Residual units at dilations 1, 3, 9 then downsampling by `stride`: (B, C, T) -> (B, C', T/stride)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        dilations: Sequence[int] = (1, 3, 9),
        bias: bool = True,
        mode: str = "causal",
        nonlinear_activation: str = "ELU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        self.res_units = nn.ModuleList(
            ResidualUnit(
                in_channels, in_channels, dilation=dilation, mode=mode,
                nonlinear_activation=nonlinear_activation,
                nonlinear_activation_params=nonlinear_activation_params,
            )
            for dilation in dilations
        )
        self.conv = conv1d_for_mode(mode)(in_channels, out_channels, 2 * stride, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.res_units:
            x = unit(x)
        return self.conv(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        for unit in self.res_units:
            x = unit.step(x)
        return self.conv.step(x)


class Encoder(nn.Module):
    """Waveform (B, C_in, T) -> features (B, encode_channels * ratios[-1], T / prod(strides))."""

    def __init__(
        self,
        input_channels: int,
        encode_channels: int,
        channel_ratios: Sequence[int] = (2, 4, 8, 16),
        strides: Sequence[int] = (3, 4, 5, 5),
        kernel_size: int = 7,
        bias: bool = True,
        mode: str = "causal",
        nonlinear_activation: str = "ELU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        if len(channel_ratios) != len(strides):
            raise ValueError("enc_ratios and enc_strides must have the same length")
        self.conv = conv1d_for_mode(mode)(input_channels, encode_channels, kernel_size, stride=1, bias=False)
        self.conv_blocks = nn.ModuleList()
        in_channels = encode_channels
        for ratio, stride in zip(channel_ratios, strides):
            out_channels = encode_channels * ratio
            self.conv_blocks.append(
                EncoderBlock(
                    in_channels, out_channels, stride, bias=bias, mode=mode,
                    nonlinear_activation=nonlinear_activation,
                    nonlinear_activation_params=nonlinear_activation_params,
                )
            )
            in_channels = out_channels
        self.out_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for block in self.conv_blocks:
            x = block(x)
        return x

    def step(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv.step(x)
        for block in self.conv_blocks:
            x = block.step(x)
        return x


class ActivateEncoder(Encoder):
    """Encoder followed by one more activation (the `activate_audiodec` codec)."""

    def __init__(
        self, *args, nonlinear_activation: str = "ELU", nonlinear_activation_params: dict | None = None, **kwargs
    ) -> None:
        super().__init__(
            *args, nonlinear_activation=nonlinear_activation,
            nonlinear_activation_params=nonlinear_activation_params, **kwargs,
        )
        self.activation = get_activation(nonlinear_activation, nonlinear_activation_params)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(super().forward(x))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(super().step(x))
