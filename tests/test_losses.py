"""Training losses: values against direct numpy / librosa computations and known inputs."""

from __future__ import annotations

import glob
import os

import librosa
import numpy as np
import pytest
import torch
import yaml

from losses import (
    LOSSES,
    DiscriminatorAdversarialLoss,
    FeatureMatchLoss,
    GeneratorAdversarialLoss,
    MelSpectrogram,
    MultiMelSpectrogramLoss,
    MultiResolutionSTFTLoss,
    MultiWindowShapeLoss,
)

OFFICIAL_EXP = os.path.join(os.path.dirname(__file__), "data", "official", "exp")
LOG_FUNCTIONS = {None: np.log, 2: np.log2, 10: np.log10}


def _speech_like(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Harmonic tones with noise, (batch, 1, length), in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    time = torch.arange(length) / 16000
    pitch = 100 + 50 * torch.rand(batch, 1, 1, generator=generator)
    tones = sum(torch.sin(2 * torch.pi * k * pitch * time) / k for k in range(1, 6))
    return 0.3 * tones + 0.05 * torch.randn(batch, 1, length, generator=generator)


def _magnitude_librosa(signal: np.ndarray, fft_size: int, hop_size: int, win_length: int, eps: float) -> np.ndarray:
    """Reference magnitude (frames, bins): centered, reflect-padded periodic-Hann STFT in float64."""
    spectrum = librosa.stft(
        signal.astype(np.float64), n_fft=fft_size, hop_length=hop_size, win_length=win_length,
        window="hann", center=True, pad_mode="reflect",
    )
    return np.sqrt(np.maximum(np.abs(spectrum) ** 2, eps)).T


def _log_mel_reference(
    signal: np.ndarray, fs: int, fft_size: int, hop_size: int, win_length: int, num_mels: int,
    fmin: float, fmax: float, log_base: int | None,
) -> np.ndarray:
    magnitude = _magnitude_librosa(signal, fft_size, hop_size, win_length, 1e-10)
    mel_basis = librosa.filters.mel(sr=fs, n_fft=fft_size, n_mels=num_mels, fmin=fmin, fmax=fmax)
    return LOG_FUNCTIONS[log_base](np.maximum(magnitude @ mel_basis.T.astype(np.float64), 1e-10)).T


MEL_PARAMS = {
    "fs": 16000, "fft_sizes": [512, 256], "hop_sizes": [128, 64], "win_lengths": [400, 256],
    "window": "hann_window", "num_mels": 40, "fmin": 0, "fmax": 8000,
}


@pytest.mark.parametrize("log_base", [None, 10, 2])
def test_mel_loss_matches_a_hand_computation(log_base: int | None) -> None:
    target = _speech_like(2, 4000, seed=1)
    predicted = target + 0.1 * _speech_like(2, 4000, seed=2)
    loss = MultiMelSpectrogramLoss(**MEL_PARAMS, log_base=log_base)(predicted, target)

    per_resolution = []
    resolutions = zip(MEL_PARAMS["fft_sizes"], MEL_PARAMS["hop_sizes"], MEL_PARAMS["win_lengths"])
    for fft_size, hop_size, win_length in resolutions:
        geometry = (16000, fft_size, hop_size, win_length, 40, 0, 8000, log_base)
        distances = [
            np.abs(_log_mel_reference(p, *geometry) - _log_mel_reference(t, *geometry))
            for p, t in zip(predicted[:, 0].numpy(), target[:, 0].numpy())
        ]
        per_resolution.append(np.mean(distances))
    assert loss.item() == pytest.approx(np.mean(per_resolution), rel=2e-4)


def test_mel_spectrogram_shape_and_values() -> None:
    signal = _speech_like(3, 3000)
    mel = MelSpectrogram(fs=16000, fft_size=512, hop_size=100, win_length=400, num_mels=40, fmin=0, fmax=8000,
                         log_base=None)(signal)
    assert mel.shape == (3, 40, 3000 // 100 + 1)
    reference = _log_mel_reference(signal[1, 0].numpy(), 16000, 512, 100, 400, 40, 0, 8000, None)
    np.testing.assert_allclose(mel[1].numpy(), reference, rtol=1e-4, atol=1e-4)


def test_mel_loss_is_zero_for_identical_signals_and_grows_with_distortion() -> None:
    target = _speech_like(2, 9600)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(3))
    mel_loss = MultiMelSpectrogramLoss(
        fs=48000, fft_sizes=[2048], hop_sizes=[300], win_lengths=[2048], num_mels=80, fmin=0, fmax=24000,
        log_base=None,
    )
    assert mel_loss(target, target).item() == 0.0
    losses = [mel_loss(target + level * noise, target).item() for level in (0.001, 0.01, 0.1, 0.5)]
    assert all(a < b for a, b in zip(losses, losses[1:])), losses


def test_mel_loss_gradient_is_finite_at_silence() -> None:
    predicted = torch.zeros(1, 1, 4800, requires_grad=True)
    loss = MultiMelSpectrogramLoss(**MEL_PARAMS, log_base=None)(predicted, _speech_like(1, 4800))
    loss.backward()
    assert torch.isfinite(predicted.grad).all()
    assert loss.item() > 1.0


def test_spectral_losses_reject_unknown_options() -> None:
    with pytest.raises(ValueError, match="log_base"):
        MultiMelSpectrogramLoss(**MEL_PARAMS, log_base=3)
    with pytest.raises(ValueError, match="window"):
        MultiResolutionSTFTLoss(window="triangle_window")


def test_stft_loss_matches_a_direct_computation() -> None:
    target = torch.cat([_speech_like(2, 3000, seed=4), _speech_like(2, 3000, seed=5)], dim=1)  # (2, 2, T)
    predicted = target + 0.2 * torch.randn(target.shape, generator=torch.Generator().manual_seed(6))
    params = {"fft_sizes": [256, 512], "hop_sizes": [64, 120], "win_lengths": [200, 480], "window": "hann_window"}
    convergence, log_magnitude = MultiResolutionSTFTLoss(**params)(predicted, target)

    expected_convergence, expected_log_magnitude = [], []
    for fft_size, hop_size, win_length in zip(params["fft_sizes"], params["hop_sizes"], params["win_lengths"]):
        predicted_mag = np.stack([_magnitude_librosa(x, fft_size, hop_size, win_length, 1e-7)
                                  for x in predicted.reshape(4, -1).numpy()])
        target_mag = np.stack([_magnitude_librosa(x, fft_size, hop_size, win_length, 1e-7)
                               for x in target.reshape(4, -1).numpy()])
        expected_convergence.append(np.linalg.norm(target_mag - predicted_mag) / np.linalg.norm(target_mag))
        expected_log_magnitude.append(np.mean(np.abs(np.log(target_mag) - np.log(predicted_mag))))
    assert convergence.item() == pytest.approx(np.mean(expected_convergence), rel=1e-4)
    assert log_magnitude.item() == pytest.approx(np.mean(expected_log_magnitude), rel=1e-4)


def test_stft_loss_is_zero_for_identical_signals() -> None:
    target = _speech_like(2, 4800)
    convergence, log_magnitude = MultiResolutionSTFTLoss()(target, target)
    assert convergence.item() == 0.0 and log_magnitude.item() == 0.0


def test_shape_loss_compares_windowed_maxima() -> None:
    target = _speech_like(2, 1000, seed=7)
    predicted = 0.5 * _speech_like(2, 1000, seed=8)
    loss = MultiWindowShapeLoss(winlen=[300, 100])(predicted, target)

    def envelope(signal: torch.Tensor, winlen: int) -> np.ndarray:
        usable = signal.shape[-1] // winlen * winlen
        return np.abs(signal[..., :usable].numpy()).reshape(2, 1, -1, winlen).max(axis=-1)

    expected = np.mean([np.mean(np.abs(envelope(predicted, w) - envelope(target, w))) for w in (300, 100)])
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert MultiWindowShapeLoss(winlen=[300])(target, -target).item() == 0.0


def _constant_outputs(*values: float) -> list[list[torch.Tensor]]:
    """One discriminator per value: a feature map of ones, then a decision filled with the value."""
    return [[torch.ones(2, 3), torch.full((2, 5), value)] for value in values]


@pytest.mark.parametrize(
    ("loss_type", "average", "expected"),
    [("mse", False, 0.25 + 4.0), ("mse", True, (0.25 + 4.0) / 2), ("hinge", False, -0.5 + 1.0), ("hinge", True, 0.25)],
)
def test_generator_adversarial_loss_on_known_decisions(loss_type: str, average: bool, expected: float) -> None:
    loss = GeneratorAdversarialLoss(average_by_discriminators=average, loss_type=loss_type)
    assert loss(_constant_outputs(0.5, -1.0)).item() == pytest.approx(expected)
    assert loss([torch.full((2, 5), 0.5), torch.full((2, 5), -1.0)]).item() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("loss_type", "average", "expected_real", "expected_fake"),
    [
        # real decisions 0.5 and 2.0; fake decisions -0.5 and 0.25
        ("mse", False, 0.25 + 1.0, 0.25 + 0.0625),
        ("mse", True, (0.25 + 1.0) / 2, (0.25 + 0.0625) / 2),
        ("hinge", False, 0.5 + 0.0, 0.5 + 1.25),
        ("hinge", True, 0.25, 0.875),
    ],
)
def test_discriminator_adversarial_loss_on_known_decisions(
    loss_type: str, average: bool, expected_real: float, expected_fake: float
) -> None:
    loss = DiscriminatorAdversarialLoss(average_by_discriminators=average, loss_type=loss_type)
    real_loss, fake_loss = loss(_constant_outputs(-0.5, 0.25), _constant_outputs(0.5, 2.0))
    assert real_loss.item() == pytest.approx(expected_real)
    assert fake_loss.item() == pytest.approx(expected_fake)


def test_adversarial_losses_reject_an_unknown_type() -> None:
    with pytest.raises(ValueError, match="loss_type"):
        GeneratorAdversarialLoss(loss_type="wasserstein")
    with pytest.raises(ValueError, match="loss_type"):
        DiscriminatorAdversarialLoss(loss_type="wasserstein")


def _feature_pair() -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Two discriminators; per-layer L1 distances (1, 2, 10) and (3, 20)."""
    real = [[torch.zeros(2, 4), torch.zeros(2, 3), torch.zeros(2, 1)], [torch.zeros(2, 6), torch.zeros(2, 2)]]
    fake = [[torch.full((2, 4), 1.0), torch.full((2, 3), -2.0), torch.full((2, 1), 10.0)],
            [torch.full((2, 6), 3.0), torch.full((2, 2), -20.0)]]
    return fake, real


@pytest.mark.parametrize(
    ("by_layers", "by_discriminators", "include_final", "expected"),
    [
        (False, False, False, 1 + 2 + 3),
        (True, False, False, (1 + 2) / 2 + 3),
        (False, True, False, (1 + 2 + 3) / 2),
        (True, True, False, ((1 + 2) / 2 + 3) / 2),
        (False, False, True, 1 + 2 + 10 + 3 + 20),
        (True, True, True, ((1 + 2 + 10) / 3 + (3 + 20) / 2) / 2),
    ],
)
def test_feature_matching_loss_on_known_features(
    by_layers: bool, by_discriminators: bool, include_final: bool, expected: float
) -> None:
    fake, real = _feature_pair()
    loss = FeatureMatchLoss(
        average_by_layers=by_layers, average_by_discriminators=by_discriminators, include_final_outputs=include_final
    )
    assert loss(fake, real).item() == pytest.approx(expected)


def test_feature_matching_loss_does_not_train_on_real_features() -> None:
    fake, real = _feature_pair()
    for layers in fake + real:
        for feature in layers:
            feature.requires_grad_(True)
    FeatureMatchLoss()(fake, real).backward()
    assert fake[0][0].grad is not None
    assert all(feature.grad is None for layers in real for feature in layers)


@pytest.mark.parametrize("config_path", sorted(glob.glob(os.path.join(OFFICIAL_EXP, "*", "*", "config.yml"))))
def test_registry_builds_every_loss_from_official_configs(config_path: str) -> None:
    config = yaml.safe_load(open(config_path))
    signal = _speech_like(2, 9600)
    for name, loss_class in LOSSES.items():
        criterion = loss_class(**config.get(f"{name}_loss_params", {}))
        if name in ("mel", "stft", "shape", "complex_stft", "phase", "time_l1"):
            value = criterion(signal, signal)
            values = value if isinstance(value, tuple) else (value,)
            assert all(v.item() == 0.0 for v in values)
    assert set(LOSSES) == {
        "mel", "stft", "shape", "generator_adv", "discriminator_adv", "feat_match", "complex_stft", "phase", "time_l1",
    }


def test_mel_loss_accepts_the_single_resolution_spelling_of_older_configs() -> None:
    params = {"fs": 24000, "num_mels": 80, "fmin": 0, "fmax": 12000, "log_base": None}
    legacy = MultiMelSpectrogramLoss(**params, fft_size=2048, hop_size=300, win_length=None, window="hann")
    current = MultiMelSpectrogramLoss(
        **params, fft_sizes=[2048], hop_sizes=[300], win_lengths=[2048], window="hann_window"
    )
    target, predicted = _speech_like(2, 6000, seed=9), _speech_like(2, 6000, seed=10)
    assert len(legacy.mel_transforms) == 1
    assert legacy(predicted, target).item() == current(predicted, target).item() > 0
