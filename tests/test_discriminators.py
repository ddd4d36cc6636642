"""Discriminators: official training checkpoints resume unchanged; outputs, sizes and norms."""

from __future__ import annotations

import glob
import json
import os

import librosa
import numpy as np
import pytest
import torch
import yaml
from torch.nn.utils import parametrize

from models.vocoder.modules.discriminator import (
    DISCRIMINATORS,
    HiFiGANDiscriminator,
    UnivNetDiscriminator,
    UnivNetSpectralDiscriminator,
)

OFFICIAL = os.path.join(os.path.dirname(__file__), "data", "official")
CHECKPOINTS = sorted(glob.glob(os.path.join(OFFICIAL, "exp", "*", "*", "checkpoint-*steps.pkl")))
CONFIGS = sorted(glob.glob(os.path.join(OFFICIAL, "exp", "*", "*", "config.yml")))

# Full-size discriminator_params of the original's config/autoencoder/symAD_vctk_48000_hop300.yaml
# and symADuniv_vctk_48000_hop300.yaml (the released models' discriminators).
FULL_HIFIGAN_PARAMS = {
    "scales": 3,
    "scale_downsample_pooling": "AvgPool1d",
    "scale_downsample_pooling_params": {"kernel_size": 4, "stride": 2, "padding": 2},
    "scale_discriminator_params": {
        "in_channels": 1, "out_channels": 1, "kernel_sizes": [15, 41, 5, 3], "channels": 128,
        "max_downsample_channels": 1024, "max_groups": 16, "bias": True, "downsample_scales": [4, 4, 4, 4, 1],
        "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.1},
    },
    "follow_official_norm": True,
    "periods": [2, 3, 5, 7, 11],
    "period_discriminator_params": {
        "in_channels": 1, "out_channels": 1, "kernel_sizes": [5, 3], "channels": 32,
        "downsample_scales": [3, 3, 3, 3, 1], "max_downsample_channels": 1024, "bias": True,
        "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.1},
        "use_weight_norm": True, "use_spectral_norm": False,
    },
}
FULL_UNIVNET_PARAMS = {
    "fft_sizes": [1024, 2048, 512],
    "hop_sizes": [120, 240, 50],
    "win_lengths": [600, 1200, 240],
    "window": "hann_window",
    "spectral_discriminator_params": {
        "channels": 32,
        "kernel_sizes": [[3, 9], [3, 9], [3, 9], [3, 9], [3, 3], [3, 3]],
        "strides": [[1, 1], [1, 2], [1, 2], [1, 2], [1, 1], [1, 1]],
        "bias": True, "nonlinear_activation": "LeakyReLU", "nonlinear_activation_params": {"negative_slope": 0.2},
    },
    "periods": [2, 3, 5, 7, 11],
    "period_discriminator_params": FULL_HIFIGAN_PARAMS["period_discriminator_params"],
}


def _config(path: str) -> dict:
    with open(os.path.join(os.path.dirname(path), "config.yml")) as file:
        return yaml.safe_load(file)


def _build(config: dict) -> torch.nn.Module:
    return DISCRIMINATORS[config["model_type"]](**config["discriminator_params"])


def _small_hifigan() -> HiFiGANDiscriminator:
    return _build(_config(os.path.join(OFFICIAL, "exp", "autoencoder", "symAD_vctk_48000_hop300", "config.yml")))


def _small_univnet() -> UnivNetDiscriminator:
    return _build(_config(os.path.join(OFFICIAL, "exp", "autoencoder", "symADuniv_vctk_48000_hop300", "config.yml")))


def test_official_checkpoints_are_all_covered() -> None:
    assert len(CHECKPOINTS) == 16 and len(CONFIGS) == 11


@pytest.mark.parametrize("checkpoint_path", CHECKPOINTS, ids=lambda p: os.path.relpath(p, OFFICIAL))
def test_official_discriminator_loads_strict_and_saves_the_same_state(checkpoint_path: str) -> None:
    checkpoint = torch.load(checkpoint_path, weights_only=True)
    official_state = checkpoint["model"]["discriminator"]
    discriminator = _build(_config(checkpoint_path))
    discriminator.load_state_dict(official_state, strict=True)

    saved = discriminator.state_dict()
    assert list(saved) == list(official_state)
    assert all(torch.equal(saved[key], official_state[key]) for key in official_state)
    # Adam resumes by parameter position: the original's order must be ours.
    official_parameter_count = len(checkpoint["optimizer"]["discriminator"]["param_groups"][0]["params"])
    assert official_parameter_count == len(list(discriminator.parameters()))
    names = [name for name, _ in discriminator.named_parameters()]
    weight_norm_names = [name for name in official_state if not name.endswith(".window")]
    assert [name.replace(".parametrizations.weight.original0", ".weight_g")
            .replace(".parametrizations.weight.original1", ".weight_v") for name in names] == weight_norm_names


def test_loaded_weight_norm_computes_g_times_unit_v() -> None:
    checkpoint_path = os.path.join(OFFICIAL, "exp", "vocoder", "AudioDec_v3_symADuniv_vctk_48000_hop300_clean",
                                   "checkpoint-500000steps.pkl")
    official_state = torch.load(checkpoint_path, weights_only=True)["model"]["discriminator"]
    discriminator = _build(_config(checkpoint_path))
    discriminator.load_state_dict(official_state)
    for stem, conv in [("mpd.discriminators.2.convs.1.0.conv", discriminator.mpd.discriminators[2].convs[1][0].conv),
                       ("mrsd.discriminators.1.layers.5.conv", discriminator.mrsd.discriminators[1].layers[5].conv)]:
        g, v = official_state[f"{stem}.weight_g"], official_state[f"{stem}.weight_v"]
        expected = g * v / v.flatten(1).norm(dim=1).reshape(-1, *[1] * (v.dim() - 1))
        torch.testing.assert_close(conv.weight, expected)


def test_model_types_map_to_the_original_discriminators() -> None:
    assert DISCRIMINATORS == {
        "HiFiGAN": HiFiGANDiscriminator,
        "symAudioDec": HiFiGANDiscriminator,
        "UnivNet": UnivNetDiscriminator,
        "symAudioDecUniv": UnivNetDiscriminator,
    }


def test_full_size_parameter_counts_equal_the_original() -> None:
    counts = json.load(open(os.path.join(OFFICIAL, "keys", "param_counts.json")))
    expected = {
        "HiFiGAN": counts["autoencoder/symAD_vctk_48000_hop300"]["discriminator_parameters"],
        "UnivNet": counts["autoencoder/symADuniv_vctk_48000_hop300"]["discriminator_parameters"],
    }
    assert expected == {"HiFiGAN": 70711277, "UnivNet": 41381552}
    built = {
        "HiFiGAN": HiFiGANDiscriminator(**FULL_HIFIGAN_PARAMS),
        "UnivNet": UnivNetDiscriminator(**FULL_UNIVNET_PARAMS),
    }
    assert {name: sum(p.numel() for p in model.parameters()) for name, model in built.items()} == expected
    assert sum(p.numel() for p in UnivNetDiscriminator().parameters()) == expected["UnivNet"]


def test_hifigan_outputs_three_scales_then_five_periods() -> None:
    discriminator = _small_hifigan()
    length = 9601  # not a multiple of any period: the period discriminators pad
    outputs = discriminator(torch.randn(2, 1, length))
    assert len(outputs) == 3 + 5
    scale_lengths = [length, length // 2 + 1, (length // 2 + 1) // 2 + 1]  # AvgPool1d(4, 2, padding=2)
    for scale_outputs, scale_length in zip(outputs[:3], scale_lengths):
        assert len(scale_outputs) == 8  # first conv, 5 downsampling convs, 2 output convs
        assert scale_outputs[0].shape == (2, 8, scale_length)
        decision_length = scale_length
        for _ in range(4):
            decision_length = (decision_length - 1) // 4 + 1
        assert scale_outputs[-1].shape == (2, 1, decision_length)
    for period, period_outputs in zip([2, 3, 5, 7, 11], outputs[3:]):
        assert len(period_outputs) == 6  # 5 downsampling convs, output conv (flattened)
        rows = -(-length // period)
        assert period_outputs[0].shape == (2, 4, -(-rows // 3), period)
        for _ in range(4):
            rows = -(-rows // 3)
        assert period_outputs[-1].shape == (2, (rows + 1) * period)


def test_univnet_outputs_three_resolutions_then_five_periods() -> None:
    discriminator = _small_univnet()
    length = 9600
    outputs = discriminator(torch.randn(2, 1, length))
    assert len(outputs) == 3 + 5
    for (fft_size, hop_size, win_length), resolution_outputs in zip([(1024, 120, 600), (2048, 240, 1200),
                                                                      (512, 50, 240)], outputs[:3]):
        assert len(resolution_outputs) == 6
        frames = (length + 2 * (win_length // 2)) // hop_size + 1
        bins = fft_size // 2 + 1
        assert resolution_outputs[0].shape == (2, 4, frames, bins)
        for _ in range(3):
            bins = (bins - 1) // 2 + 1
        assert resolution_outputs[-1].shape == (2, 1, frames, bins)
    assert [len(period_outputs) for period_outputs in outputs[3:]] == [6] * 5


def test_univnet_spectrogram_matches_librosa() -> None:
    discriminator = UnivNetSpectralDiscriminator(fft_size=512, hop_size=50, win_length=240)
    signal = torch.randn(2, 1, 3000, generator=torch.Generator().manual_seed(0))
    padded = np.pad(signal[1, 0].numpy().astype(np.float64), 120)
    expected = np.abs(librosa.stft(padded, n_fft=512, hop_length=50, win_length=240, window="hann", center=True,
                                   pad_mode="reflect")).T
    spectrogram = discriminator.spectrogram(signal)
    assert spectrogram.shape == (2, 1, *expected.shape)
    np.testing.assert_allclose(spectrogram[1, 0].numpy(), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build", [_small_hifigan, _small_univnet])
def test_channels_are_judged_as_separate_signals(build) -> None:
    discriminator = build()
    stereo = torch.randn(2, 2, 4800, generator=torch.Generator().manual_seed(1))
    joint = discriminator(stereo)
    left = discriminator(stereo[:, :1])
    right = discriminator(stereo[:, 1:])
    for joint_layers, left_layers, right_layers in zip(joint, left, right):
        for joint_output, left_output, right_output in zip(joint_layers, left_layers, right_layers):
            assert joint_output.shape[0] == 4
            # to rounding: a batch of 4 and one of 2 may run other convolution kernels (AVX2 vs AVX-512)
            torch.testing.assert_close(joint_output[0::2], left_output, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(joint_output[1::2], right_output, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build", [_small_hifigan, _small_univnet])
def test_gradients_reach_every_parameter(build) -> None:
    discriminator = build()
    outputs = discriminator(torch.randn(1, 1, 4800))
    sum(layer.square().mean() for layers in outputs for layer in layers).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in discriminator.parameters())


def test_scale_discriminators_follow_the_original_unless_asked_to_normalize() -> None:
    config = _config(CONFIGS[0])["discriminator_params"]
    assert config["follow_official_norm"] is True
    as_original = HiFiGANDiscriminator(**config)
    assert not any(parametrize.is_parametrized(m, "weight") for m in as_original.msd.modules())
    assert all(parametrize.is_parametrized(d.output_conv.conv, "weight") for d in as_original.mpd.discriminators)

    normalized = HiFiGANDiscriminator(**config, norm_scale_discriminators=True)
    first, *others = normalized.msd.discriminators

    def norm_types(scale: torch.nn.Module) -> set[str]:
        convs = [m for m in scale.modules() if isinstance(m, torch.nn.Conv1d)]
        return {type(conv.parametrizations.weight[0]).__name__ for conv in convs}

    assert norm_types(first) == {"_SpectralNorm"}
    assert all(norm_types(scale) == {"_WeightNorm"} for scale in others)
    assert "msd.discriminators.1.layers.0.0.conv.weight_g" in normalized.state_dict()
    normalized(torch.randn(1, 1, 4800))


def test_conflicting_or_unknown_options_are_rejected() -> None:
    period_params = {**FULL_HIFIGAN_PARAMS["period_discriminator_params"], "use_spectral_norm": True}
    with pytest.raises(ValueError, match="weight norm or spectral norm"):
        HiFiGANDiscriminator(period_discriminator_params=period_params)
    with pytest.raises(ValueError, match="activation"):
        UnivNetDiscriminator(spectral_discriminator_params={"nonlinear_activation": "Swoosh"})
    with pytest.raises(ValueError, match="pooling"):
        HiFiGANDiscriminator(scale_downsample_pooling="MeanPool1d")


@pytest.mark.parametrize("count", [2, 3, 6])
def test_univnet_spectral_layers_are_built_as_the_original_builds_them(count: int) -> None:
    """The original takes any two or more (kernel, stride) pairs: the first conv, the hidden ones, the
    last hidden and the output conv; with two, the first pair serves the first and the last hidden conv."""
    kernels = [(3, 9), (3, 7), (3, 5), (3, 3), (5, 3), (3, 1)][-count:]
    strides = [(1, 1), (1, 2), (1, 2), (1, 1), (1, 2), (1, 1)][-count:]
    used = [0, *range(1, count - 2), count - 2, count - 1]
    discriminator = UnivNetSpectralDiscriminator(64, 16, 64, kernel_sizes=kernels, strides=strides, channels=4,
                                                 use_weight_norm=False)
    convs = [layer[0] if isinstance(layer, torch.nn.Sequential) else layer for layer in discriminator.layers]
    assert [(conv.conv.kernel_size, conv.conv.stride) for conv in convs] == [(kernels[i], strides[i]) for i in used]
    assert [conv.conv.out_channels for conv in convs] == [4] * (len(used) - 1) + [1]
    outputs = discriminator(torch.randn(2, 1, 640))
    assert len(outputs) == len(used) and outputs[-1].shape[1] == 1
    with pytest.raises(ValueError, match="at least 2"):
        UnivNetSpectralDiscriminator(64, 16, 64, kernel_sizes=kernels[:1], strides=strides[:1])
