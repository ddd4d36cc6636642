"""AudioDec decoder: mirror of the encoder with transposed convs (upsampling by each stride)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layers.activation import get_activation
from layers.conv import CausalConvTranspose1d, NonCausalConvTranspose1d
from models.autoencoder.modules.residual_unit import ResidualUnit, conv1d_for_mode


class DecoderBlock(nn.Module):
    """Upsampling by `stride` then residual units at dilations 1, 3, 9: (B, C, T) -> (B, C', T*stride)."""

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
        if mode == "causal":
            self.conv = CausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride, bias=bias)
        else:
            conv1d_for_mode(mode)  # validates the name
            self.conv = NonCausalConvTranspose1d(in_channels, out_channels, 2 * stride, stride, bias=bias)
        self.res_units = nn.ModuleList(
            ResidualUnit(
                out_channels, out_channels, dilation=dilation, mode=mode,
                nonlinear_activation=nonlinear_activation,
                nonlinear_activation_params=nonlinear_activation_params,
            )
            for dilation in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        for unit in self.res_units:
            x = unit(x)
        return x

    def step(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv.step(x)
        for unit in self.res_units:
            x = unit.step(x)
        return x


def _block_channels(decode_channels: int, channel_ratios: Sequence[int]) -> list[tuple[int, int]]:
    """(in, out) channels of each decoder block; the last block ends at `decode_channels`."""
    ins = [decode_channels * ratio for ratio in channel_ratios]
    return list(zip(ins, ins[1:] + [decode_channels]))


class Decoder(nn.Module):
    """Latent (B, code_dim, T) -> waveform (B, C_out, T * prod(strides))."""

    def __init__(
        self,
        code_dim: int,
        output_channels: int,
        decode_channels: int,
        channel_ratios: Sequence[int] = (16, 8, 4, 2),
        strides: Sequence[int] = (5, 5, 4, 3),
        kernel_size: int = 7,
        bias: bool = True,
        mode: str = "causal",
        nonlinear_activation: str = "ELU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        if len(channel_ratios) != len(strides):
            raise ValueError("dec_ratios and dec_strides must have the same length")
        conv = conv1d_for_mode(mode)
        self.conv1 = conv(code_dim, decode_channels * channel_ratios[0], kernel_size, stride=1, bias=False)
        self.conv_blocks = nn.ModuleList(
            self._make_block(
                in_ch, out_ch, stride, bias, mode, nonlinear_activation, nonlinear_activation_params
            )
            for (in_ch, out_ch), stride in zip(_block_channels(decode_channels, channel_ratios), strides)
        )
        self.conv2 = conv(decode_channels, output_channels, kernel_size, stride=1, bias=False)

    def _make_block(self, in_ch, out_ch, stride, bias, mode, activation, activation_params) -> nn.Module:
        return DecoderBlock(
            in_ch, out_ch, stride, bias=bias, mode=mode,
            nonlinear_activation=activation, nonlinear_activation_params=activation_params,
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1(z)
        for block in self.conv_blocks:
            x = block(x)
        return self.conv2(x)

    def step(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1.step(z)
        for block in self.conv_blocks:
            x = block.step(x)
        return self.conv2.step(x)


class ActivateDecoder(Decoder):
    """Decoder with an activation before each block and before the output conv, and a tanh output.

    Module tree as the original `activate_audiodec`: `conv_blocks.i` = Sequential(activation,
    DecoderBlock) for each block, then a bare activation as the last entry.
    """

    def __init__(
        self, *args, nonlinear_activation: str = "ELU", nonlinear_activation_params: dict | None = None, **kwargs
    ) -> None:
        super().__init__(
            *args, nonlinear_activation=nonlinear_activation,
            nonlinear_activation_params=nonlinear_activation_params, **kwargs,
        )
        self.conv_blocks.append(get_activation(nonlinear_activation, nonlinear_activation_params))
        self.activation_output = nn.Tanh()

    def _make_block(self, in_ch, out_ch, stride, bias, mode, activation, activation_params) -> nn.Module:
        return nn.Sequential(
            get_activation(activation, activation_params),
            super()._make_block(in_ch, out_ch, stride, bias, mode, activation, activation_params),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.activation_output(super().forward(z))

    def step(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv1.step(z)
        for block in self.conv_blocks[:-1]:
            x = block[1].step(block[0](x))
        x = self.conv_blocks[-1](x)
        return self.activation_output(self.conv2.step(x))
