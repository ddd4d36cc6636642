"""Magnitude spectrogram shared by the spectral losses."""

from __future__ import annotations

import torch

WINDOWS = ("hann_window", "hamming_window", "blackman_window", "bartlett_window")


def make_window(name: str, length: int) -> torch.Tensor:
    """Window `name` of `length` samples: a torch window function ("hann_window"), or its short
    name ("hann") as older configs spell it."""
    if not name.endswith("_window"):
        name = f"{name}_window"
    if name not in WINDOWS:
        raise ValueError(f"window {name!r} is not supported; choose one of {WINDOWS}")
    return getattr(torch, name)(length)


def magnitude_spectrogram(
    signal: torch.Tensor,
    fft_size: int,
    hop_size: int,
    win_length: int,
    window: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Centered STFT magnitude `sqrt(max(|X|^2, eps))`.

    Args:
        signal: waveform (B, T).
        fft_size, hop_size, win_length: STFT geometry.
        window: analysis window (win_length,).
        eps: floor on the power, which keeps the square root's gradient finite at silence.

    Returns:
        magnitude (B, frames, fft_size // 2 + 1), frames = T // hop_size + 1.
    """
    spectrum = torch.stft(
        signal, fft_size, hop_size, win_length, window.to(signal.dtype), center=True,
        pad_mode="reflect", return_complex=True,
    )
    power = spectrum.real**2 + spectrum.imag**2
    return torch.sqrt(torch.clamp(power, min=eps)).transpose(1, 2)


def flatten_channels(signal: torch.Tensor) -> torch.Tensor:
    """Fold channels into the batch: (B, C, T) -> (B * C, T); (B, T) passes through."""
    if signal.dim() == 3:
        return signal.reshape(-1, signal.shape[-1])
    if signal.dim() != 2:
        raise ValueError(f"expected a waveform (B, T) or (B, C, T), got shape {tuple(signal.shape)}")
    return signal
