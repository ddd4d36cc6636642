"""Waveform shape loss: L1 distance of amplitude envelopes taken as windowed maxima of |x|."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class WaveformShapeLoss(nn.Module):
    """L1 distance of the envelopes `max |x|` over consecutive, non-overlapping windows."""

    def __init__(self, winlen: int) -> None:
        super().__init__()
        self.winlen = winlen

    def envelope(self, signal: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, C, T // winlen); a trailing partial window is dropped."""
        return F.max_pool1d(signal.abs(), self.winlen)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, C, T) -> scalar loss."""
        return F.l1_loss(self.envelope(predicted), self.envelope(target))


class MultiWindowShapeLoss(nn.Module):
    """Shape losses averaged over several window lengths (config `shape_loss_params`)."""

    def __init__(self, winlen: Sequence[int] = (300, 200, 100)) -> None:
        super().__init__()
        self.shape_losses = nn.ModuleList(WaveformShapeLoss(length) for length in winlen)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, C, T) -> scalar loss."""
        loss = predicted.new_zeros(())
        for shape_loss in self.shape_losses:
            loss = loss + shape_loss(predicted, target)
        return loss / len(self.shape_losses)
