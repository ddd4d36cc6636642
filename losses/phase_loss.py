"""Metric losses that see the waveform, not only its magnitude spectrum: the L1 distance of complex
STFTs (real and imaginary parts), the anti-wrapped phase distances of the STFTs, and the time-domain L1
distance. The mel and STFT-magnitude losses leave the phase free; these constrain it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from losses.spectrogram import flatten_channels, make_window


def complex_spectrogram(
    signal: torch.Tensor, fft_size: int, hop_size: int, win_length: int, window: torch.Tensor, center: bool = True
) -> torch.Tensor:
    """Complex STFT of a waveform (B, T) -> (B, fft_size // 2 + 1, frames); centered (reflect-padded,
    T // hop_size + 1 frames) unless `center` is False."""
    return torch.stft(
        signal, fft_size, hop_size, win_length, window.to(signal.dtype), center=center, pad_mode="reflect",
        return_complex=True,
    )


def anti_wrap(angle: torch.Tensor) -> torch.Tensor:
    """|angle - 2 pi round(angle / 2 pi)|: the distance of a phase difference to 0 on the circle, in [0, pi]."""
    return (angle - 2 * math.pi * torch.round(angle / (2 * math.pi))).abs()


def _safe_phase(spectrum: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The phase of the bins marked ``valid`` (0 elsewhere), with a finite gradient everywhere
    (the gradient of atan2 at a zero bin is 0 / 0)."""
    real = torch.where(valid, spectrum.real, torch.ones_like(spectrum.real))
    imag = torch.where(valid, spectrum.imag, torch.zeros_like(spectrum.imag))
    return torch.where(valid, torch.atan2(imag, real), torch.zeros_like(real))


class _MultiResolution(nn.Module):
    """STFT geometries shared by the multi-resolution losses below."""

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        center: bool = True,
    ) -> None:
        """`center`: reflect-padded frames centered on their hop (the original's released c16 config
        names it in its `complex_stft_loss_params`)."""
        super().__init__()
        self.center = center
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_lengths))
        for index, (_, _, win_length) in enumerate(self.resolutions):
            self.register_buffer(f"window_{index}", make_window(window, win_length), persistent=False)

    def spectra(self, predicted: torch.Tensor, target: torch.Tensor):
        """Yield (predicted, target) complex STFTs (B * C, bins, frames) at each resolution."""
        predicted, target = flatten_channels(predicted), flatten_channels(target)
        for index, (fft_size, hop_size, win_length) in enumerate(self.resolutions):
            window = getattr(self, f"window_{index}")
            yield (complex_spectrogram(predicted, fft_size, hop_size, win_length, window, self.center),
                   complex_spectrogram(target, fft_size, hop_size, win_length, window, self.center))  # fmt: skip


class MultiResolutionComplexSTFTLoss(_MultiResolution):
    """Mean |Re Y - Re X| + mean |Im Y - Im X| of the complex STFTs, averaged over resolutions
    (config ``complex_stft_loss_params``). Magnitude and phase together: a delay or a phase error costs
    as much as a magnitude error of the same size."""

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) or (B, C, T) -> scalar loss."""
        loss = predicted.new_zeros(())
        for predicted_spectrum, target_spectrum in self.spectra(predicted, target):
            loss = loss + F.l1_loss(predicted_spectrum.real, target_spectrum.real)
            loss = loss + F.l1_loss(predicted_spectrum.imag, target_spectrum.imag)
        return loss / len(self.resolutions)


class MultiResolutionPhaseLoss(_MultiResolution):
    """Anti-wrapped phase distances of the STFTs (config ``phase_loss_params``), averaged over resolutions.

    The sum of three means over the bins where the target has energy: the instantaneous phase
    ``AW(phi_Y - phi_X)``, the group delay ``AW(d_f phi_Y - d_f phi_X)`` (differences along frequency) and
    the instantaneous frequency ``AW(d_t phi_Y - d_t phi_X)`` (along time), with ``AW`` of
    :func:`anti_wrap`. A bin counts when the target's power is at least ``min_relative_power`` times the
    largest power of its signal at that resolution: the phase of a bin without energy is noise. Pair it
    with a magnitude loss (``stft`` or ``mel``), which it leaves to them.
    """

    def __init__(
        self,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        center: bool = True,
        min_relative_power: float = 1e-4,
    ) -> None:
        super().__init__(fft_sizes, hop_sizes, win_lengths, window, center)
        self.min_relative_power = min_relative_power

    @staticmethod
    def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return (values * mask).sum() / mask.sum().clamp(min=1)

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, T) or (B, C, T) -> scalar loss (radians)."""
        loss = predicted.new_zeros(())
        for predicted_spectrum, target_spectrum in self.spectra(predicted, target):
            target_power = target_spectrum.abs().pow(2)
            floor = self.min_relative_power * target_power.flatten(1).max(1).values.view(-1, 1, 1)
            valid = (target_power >= floor) & (target_power > 0) & (predicted_spectrum.abs() > 0)
            predicted_phase = _safe_phase(predicted_spectrum, valid)
            target_phase = _safe_phase(target_spectrum, valid)
            mask = valid.to(predicted_phase.dtype)
            loss = loss + self._masked_mean(anti_wrap(predicted_phase - target_phase), mask)
            for dim in (1, 2):  # group delay (along frequency), instantaneous frequency (along time)
                both = mask.narrow(dim, 1, mask.shape[dim] - 1) * mask.narrow(dim, 0, mask.shape[dim] - 1)
                difference = torch.diff(predicted_phase, dim=dim) - torch.diff(target_phase, dim=dim)
                loss = loss + self._masked_mean(anti_wrap(difference), both)
        return loss / len(self.resolutions)


class TimeDomainL1Loss(nn.Module):
    """Mean |y - x| of the waveforms (config ``time_l1_loss_params``, no parameters)."""

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms of one shape -> scalar loss."""
        return F.l1_loss(predicted, target)
