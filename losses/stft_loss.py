"""Multi-resolution STFT loss: spectral convergence + log STFT magnitude."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losses.spectrogram import flatten_channels, magnitude_spectrogram, make_window

STFT_EPS = 1e-7


def spectral_convergence(predicted_mag: torch.Tensor, target_mag: torch.Tensor) -> torch.Tensor:
    """`||Y - X||_F / ||Y||_F` over the whole batch; magnitudes (B, frames, bins)."""
    return torch.linalg.norm(target_mag - predicted_mag) / torch.linalg.norm(target_mag)


def log_magnitude_distance(predicted_mag: torch.Tensor, target_mag: torch.Tensor) -> torch.Tensor:
    """Mean `|log Y - log X|`; magnitudes (B, frames, bins)."""
    return F.l1_loss(torch.log(predicted_mag), torch.log(target_mag))


class STFTLoss(nn.Module):
    """Spectral convergence and log-magnitude distance at one STFT resolution."""

    window: torch.Tensor

    def __init__(
        self,
        fft_size: int = 1024,
        hop_size: int = 120,
        win_length: int = 600,
        window: str = "hann_window",
    ) -> None:
        super().__init__()
        self.fft_size = fft_size
        self.hop_size = hop_size
        self.win_length = win_length
        self.register_buffer("window", make_window(window, win_length), persistent=False)

    def forward(
        self, predicted: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, T) -> (spectral convergence, log STFT magnitude loss), both scalars."""
        predicted_mag, target_mag = (
            magnitude_spectrogram(
                x, self.fft_size, self.hop_size, self.win_length, self.window, STFT_EPS
            )
            for x in (predicted, target)
        )
        return (
            spectral_convergence(predicted_mag, target_mag),
            log_magnitude_distance(predicted_mag, target_mag),
        )


class MultiResolutionSTFTLoss(nn.Module):
    """STFT losses averaged over several resolutions (config `stft_loss_params`)."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
    ) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.stft_losses = nn.ModuleList(
            STFTLoss(fft_size, hop_size, win_length, window)
            for fft_size, hop_size, win_length in zip(fft_sizes, hop_sizes, win_lengths)
        )

    def forward(
        self, predicted: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, T) or (B, C, T) -> mean (spectral convergence, log magnitude loss).

        Channels are treated as separate signals.
        """
        predicted, target = flatten_channels(predicted), flatten_channels(target)
        convergence = log_magnitude = predicted.new_zeros(())
        for stft_loss in self.stft_losses:
            resolution_convergence, resolution_log_magnitude = stft_loss(predicted, target)
            convergence = convergence + resolution_convergence
            log_magnitude = log_magnitude + resolution_log_magnitude
        count = len(self.stft_losses)
        return convergence / count, log_magnitude / count
