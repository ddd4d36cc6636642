"""HiFi-GAN residual blocks (causal): dilated convs with LeakyReLU, plus the two fusion schemes.

- `MultiReceptiveField` (v0): parallel residual blocks of different kernels, averaged.
- `MultiGroupConv1d` (v1/v2/v3): the input repeated `groups` times into one grouped residual
  block (each group is one "branch"), mixed back by a bias-free 1x1 conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from layers.activation import get_activation
from layers.conv import CausalConv1d, Conv1d1x1
from layers.layout import repeat_channels


class HiFiGANResidualBlock(nn.Module):
    """x + conv2(act(conv1(act(x)))) per dilation; (B, C, T) -> (B, C, T)."""

    def __init__(
        self,
        kernel_size: int = 3,
        channels: int = 512,
        dilations: Sequence[int] = (1, 3, 5),
        groups: int = 1,
        bias: bool = True,
        use_additional_convs: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"resblock kernel size must be odd, got {kernel_size}")
        params = {"negative_slope": 0.1} if nonlinear_activation_params is None else nonlinear_activation_params
        self.use_additional_convs = use_additional_convs
        self.activation = get_activation(nonlinear_activation, params)
        self.convs1 = nn.ModuleList(
            CausalConv1d(channels, channels, kernel_size, dilation=d, groups=groups, bias=bias) for d in dilations
        )
        if use_additional_convs:
            self.convs2 = nn.ModuleList(
                CausalConv1d(channels, channels, kernel_size, groups=groups, bias=bias) for _ in dilations
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, conv1 in enumerate(self.convs1):
            xt = conv1(self.activation(x))
            if self.use_additional_convs:
                xt = self.convs2[index](self.activation(xt))
            x = xt + x
        return x

    def step(self, x: torch.Tensor) -> torch.Tensor:
        for index, conv1 in enumerate(self.convs1):
            if self.use_additional_convs:
                xt = conv1.step(self.activation(x))
                x = self.convs2[index].step(self.activation(xt), residual=x)  # xt + x, the add fused
            else:
                x = conv1.step(self.activation(x), residual=x)
        return x


class MultiReceptiveField(nn.Module):
    """Average of residual blocks with different kernels/dilations."""

    def __init__(
        self,
        channels: int = 512,
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5), (1, 3, 5), (1, 3, 5)),
        groups: int = 1,
        bias: bool = True,
        use_additional_convs: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            HiFiGANResidualBlock(
                kernel_size=kernel, channels=channels, dilations=dilations, groups=groups, bias=bias,
                use_additional_convs=use_additional_convs, nonlinear_activation=nonlinear_activation,
                nonlinear_activation_params=nonlinear_activation_params,
            )
            for kernel, dilations in zip(resblock_kernel_sizes, resblock_dilations)
        )

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for block in self.blocks:
            total = total + block(c)
        return total / len(self.blocks)

    def step(self, c: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for block in self.blocks:
            total = total + block.step(c)
        return total / len(self.blocks)


class MultiGroupConv1d(HiFiGANResidualBlock):
    """One grouped residual block over `groups` copies of the input, mixed by a 1x1 conv."""

    def __init__(
        self,
        channels: int = 512,
        resblock_kernel_sizes: Sequence[int] = (3,),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5),),
        groups: int = 3,
        bias: bool = True,
        use_additional_convs: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        if len(resblock_kernel_sizes) != 1 or len(resblock_dilations) != 1:
            raise ValueError("the grouped residual block takes exactly one kernel size and one dilation list")
        super().__init__(
            kernel_size=resblock_kernel_sizes[0], channels=channels * groups, dilations=resblock_dilations[0],
            groups=groups, bias=bias, use_additional_convs=use_additional_convs,
            nonlinear_activation=nonlinear_activation, nonlinear_activation_params=nonlinear_activation_params,
        )
        self.groups = groups
        self.conv_out = Conv1d1x1(channels * groups, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(super().forward(x.repeat(1, self.groups, 1)))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out.step(super().step(repeat_channels(x, self.groups)))
