"""The synthetic speech-like probe signal: what the tests, the Opus alignment and the benchmark's
random-weight calibration feed a codec when no recording is at hand."""

from __future__ import annotations

import numpy as np


def speech_like_signal(duration: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A synthetic voiced-speech probe ``(T,)``, float32, peak about 0.5.

    A harmonic series (glottal-like 1/k roll-off) with a slowly wandering pitch, shaped by three
    formant-like resonances and a syllable-rate amplitude envelope with short pauses. PESQ and STOI
    need input with speech statistics (voice activity, 2-8 Hz modulation); pure tones fail them.
    """
    rng = np.random.default_rng(seed)
    n_samples = int(round(duration * sample_rate))
    time = np.arange(n_samples) / sample_rate
    base_pitch = rng.uniform(100.0, 200.0)
    pitch = base_pitch * (1.0 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 0.8) * time + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    formants = rng.uniform([500.0, 1200.0, 2500.0], [800.0, 1800.0, 3200.0])
    signal = np.zeros(n_samples)
    for harmonic in range(1, 40):
        frequency = harmonic * pitch
        gain = sum(1.0 / (1.0 + ((frequency - f) / 150.0) ** 2) for f in formants) / harmonic
        gain = np.where(frequency < sample_rate / 2 - 200, gain, 0.0)
        signal += gain * np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi))
    syllable_rate = rng.uniform(3.0, 5.0)
    envelope = np.clip(np.sin(2 * np.pi * syllable_rate * time + rng.uniform(0, 6)), 0.0, None) ** 1.5
    envelope *= np.sin(2 * np.pi * 0.4 * time) > -0.8
    signal *= envelope
    signal += 1e-4 * rng.standard_normal(n_samples)
    return (0.5 * signal / np.max(np.abs(signal))).astype(np.float32)

