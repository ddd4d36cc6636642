"""Projector: encoder features -> code_dim latent (causal conv k=3, no bias; optional BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn

from models.autoencoder.modules.residual_unit import conv1d_for_mode


class Projector(nn.Module):
    """(B, C, T) -> (B, code_dim, T). `model` is 'conv1d' or 'conv1d_bn'."""

    def __init__(
        self,
        input_channels: int,
        code_dim: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        mode: str = "causal",
        model: str = "conv1d",
    ) -> None:
        super().__init__()
        conv = conv1d_for_mode(mode)(input_channels, code_dim, kernel_size, stride=stride, bias=bias)
        if model == "conv1d":
            self.project = conv
        elif model == "conv1d_bn":
            self.project = nn.Sequential(conv, nn.BatchNorm1d(code_dim))
        else:
            raise ValueError(f"unknown projector '{model}': use 'conv1d' or 'conv1d_bn'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x)

    def step(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.project, nn.Sequential):
            return self.project[1](self.project[0].step(x))
        return self.project.step(x)
