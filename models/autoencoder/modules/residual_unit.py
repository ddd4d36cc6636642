"""Residual unit of the AudioDec encoder and decoder: act -> dilated conv -> act -> 1x1 conv, + skip."""

from __future__ import annotations

import torch
from torch import nn

from layers.activation import get_activation
from layers.conv import CausalConv1d, Conv1d1x1, NonCausalConv1d


class ResidualUnit(nn.Module):
    """(B, C, T) -> (B, C, T); causal or non-causal by `mode`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 7,
        dilation: int = 1,
        bias: bool = False,
        mode: str = "causal",
        nonlinear_activation: str = "ELU",
        nonlinear_activation_params: dict | None = None,
    ) -> None:
        super().__init__()
        conv = conv1d_for_mode(mode)
        self.activation = get_activation(nonlinear_activation, nonlinear_activation_params)
        self.conv1 = conv(in_channels, out_channels, kernel_size, stride=1, dilation=dilation, bias=bias)
        self.conv2 = Conv1d1x1(out_channels, out_channels, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(self.activation(x))
        return x + self.conv2(self.activation(y))

    def step(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1.step(self.activation(x))
        return self.conv2.step(self.activation(y), residual=x)  # x + conv2(...), the add fused


def conv1d_for_mode(mode: str) -> type[nn.Module]:
    """The Conv1d flavour a `mode` ('causal' or 'noncausal') asks for."""
    if mode == "causal":
        return CausalConv1d
    if mode == "noncausal":
        return NonCausalConv1d
    raise ValueError(f"unknown mode '{mode}': use 'causal' or 'noncausal'")
