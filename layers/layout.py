"""Keeping activations in the time-major layout oneDNN convolutions return (B, C, T) tensors in.

oneDNN convolutions work time-major (channels last, (B, T, C) in memory) and return their output
so; an operation that stored its result channel-major would make the next oneDNN convolution
transpose it back with one more copy, for every layer of every chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether (B, C, T) `x` is stored time-major, (B, T, C) in memory, as oneDNN convolutions return it."""
    return x.shape[1] > 1 and x.stride(1) == 1


def cat_time(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torch.cat((state, x), dim=-1) for (B, C, *) tensors, kept in x's layout."""
    if is_channels_last(x):
        return torch.cat((state.transpose(1, 2), x.transpose(1, 2)), dim=1).transpose(1, 2)
    return torch.cat((state, x), dim=-1)


def repeat_channels(x: torch.Tensor, times: int) -> torch.Tensor:
    """x.repeat(1, times, 1) for (B, C, T) `x`, kept in x's layout (see `cat_time`)."""
    if is_channels_last(x):
        return x.transpose(1, 2).repeat(1, 1, times).transpose(1, 2)
    return x.repeat(1, times, 1)


def pad_time(x: torch.Tensor, frames: int) -> torch.Tensor:
    """F.pad(x, (frames, 0)) for (B, C, T) `x`: zero frames before it, kept in x's layout. Padded as a
    (B, C, 1, T) view, since a 3-D F.pad returns channel-major output whatever x's layout."""
    return F.pad(x.unsqueeze(2), (frames, 0, 0, 0)).squeeze(2)
