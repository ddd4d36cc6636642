"""Multi-resolution log-mel spectrogram L1 loss (AudioDec's main reconstruction loss)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import librosa
import torch
import torch.nn.functional as F
from torch import nn

from losses.spectrogram import flatten_channels, magnitude_spectrogram, make_window

_LOGARITHMS: dict[float | None, Callable[[torch.Tensor], torch.Tensor]] = {
    None: torch.log,
    2.0: torch.log2,
    10.0: torch.log10,
}


class MelSpectrogram(nn.Module):
    """Log mel spectrogram: centered Hann STFT magnitude -> librosa mel filters -> log.

    Magnitude is `sqrt(max(power, eps))`, the mel energies are floored at `eps` before the log,
    and `log_base` None means the natural logarithm.
    """

    window: torch.Tensor
    mel_basis: torch.Tensor

    def __init__(
        self,
        fs: int = 22050,
        fft_size: int = 1024,
        hop_size: int = 256,
        win_length: int | None = None,
        window: str = "hann_window",
        num_mels: int = 80,
        fmin: float | None = 80,
        fmax: float | None = 7600,
        eps: float = 1e-10,
        log_base: float | None = 10.0,
    ) -> None:
        super().__init__()
        if log_base is not None:
            log_base = float(log_base)
        if log_base not in _LOGARITHMS:
            raise ValueError(f"log_base {log_base} is not supported; use null, 2 or 10")
        self.log = _LOGARITHMS[log_base]
        self.fft_size = fft_size
        self.hop_size = hop_size
        self.win_length = fft_size if win_length is None else win_length
        self.eps = eps
        self.register_buffer("window", make_window(window, self.win_length), persistent=False)
        mel_basis = librosa.filters.mel(
            sr=fs,
            n_fft=fft_size,
            n_mels=num_mels,
            fmin=0.0 if fmin is None else fmin,
            fmax=fs / 2 if fmax is None else fmax,
        )
        self.register_buffer("mel_basis", torch.from_numpy(mel_basis).float(), persistent=False)

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        """Waveform (B, T) or (B, C, T) -> log mel (B * C, num_mels, frames)."""
        magnitude = magnitude_spectrogram(
            flatten_channels(signal), self.fft_size, self.hop_size, self.win_length, self.window,
            self.eps,
        )
        mel = torch.matmul(magnitude, self.mel_basis.T.to(magnitude.dtype))
        return self.log(torch.clamp(mel, min=self.eps)).transpose(1, 2)


class MultiMelSpectrogramLoss(nn.Module):
    """L1 distance of log mel spectrograms, averaged over resolutions (`mel_loss_params`).

    Some released configs (LibriTTS autoencoder, denoiser) spell a single resolution as
    `fft_size` / `hop_size` / `win_length` (None = fft_size) with `window: hann`; that spelling
    is accepted and replaces the lists.
    """

    def __init__(
        self,
        fs: int = 22050,
        fft_sizes: Sequence[int] = (1024, 2048, 512),
        hop_sizes: Sequence[int] = (120, 240, 50),
        win_lengths: Sequence[int] = (600, 1200, 240),
        window: str = "hann_window",
        num_mels: int = 80,
        fmin: float | None = 80,
        fmax: float | None = 7600,
        eps: float = 1e-10,
        log_base: float | None = 10.0,
        fft_size: int | None = None,
        hop_size: int | None = None,
        win_length: int | None = None,
    ) -> None:
        super().__init__()
        if fft_size is not None:
            if hop_size is None:
                raise ValueError("a single-resolution mel loss needs hop_size with fft_size")
            fft_sizes, hop_sizes, win_lengths = [fft_size], [hop_size], [win_length or fft_size]
        if not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
            raise ValueError("fft_sizes, hop_sizes and win_lengths must have the same length")
        self.mel_transforms = nn.ModuleList(
            MelSpectrogram(
                fs=fs, fft_size=resolution_fft, hop_size=resolution_hop, win_length=resolution_window,
                window=window, num_mels=num_mels, fmin=fmin, fmax=fmax, eps=eps, log_base=log_base,
            )
            for resolution_fft, resolution_hop, resolution_window in zip(fft_sizes, hop_sizes, win_lengths)
        )

    def forward(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Waveforms (B, C, T) or (B, T) -> scalar loss."""
        loss = predicted.new_zeros(())
        for mel_transform in self.mel_transforms:
            loss = loss + F.l1_loss(mel_transform(predicted), mel_transform(target))
        return loss / len(self.mel_transforms)
