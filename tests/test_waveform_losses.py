"""The waveform-aware metric losses on signals whose values are known: identical signals, a sign flip
(every phase moved by pi), a scaled signal, and the trainer switching them on from the config."""

from __future__ import annotations

import math

import pytest
import torch

from losses import LOSSES, MultiResolutionComplexSTFTLoss, MultiResolutionPhaseLoss, TimeDomainL1Loss
from losses.phase_loss import anti_wrap
from trainer.builder import build_criteria
from utils.errors import CodecError

GEOMETRY = {"fft_sizes": [256, 128], "hop_sizes": [64, 32], "win_lengths": [256, 128]}


def noise(batch: int = 2, length: int = 2048, seed: int = 0) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 1, length, generator=torch.Generator().manual_seed(seed))


def test_identical_signals_cost_nothing() -> None:
    x = noise()
    for loss in (MultiResolutionComplexSTFTLoss(**GEOMETRY), MultiResolutionPhaseLoss(**GEOMETRY), TimeDomainL1Loss()):
        assert loss(x, x.clone()).item() == 0.0


def test_complex_stft_loss_of_a_sign_flip_is_twice_the_spectrum_l1() -> None:
    """|Re(-X) - Re X| = 2 |Re X|: the flip costs 2 (mean |Re X| + mean |Im X|), averaged over resolutions."""
    x = noise()
    expected = 0.0
    for fft_size, hop_size, win_length in zip(*GEOMETRY.values()):
        spectrum = torch.stft(x[:, 0], fft_size, hop_size, win_length, torch.hann_window(win_length),
                              center=True, pad_mode="reflect", return_complex=True)  # fmt: skip
        expected += 2 * (spectrum.real.abs().mean() + spectrum.imag.abs().mean()).item()
    expected /= 2
    loss = MultiResolutionComplexSTFTLoss(**GEOMETRY)
    assert loss(-x, x).item() == pytest.approx(expected, rel=1e-5)
    assert loss(torch.zeros_like(x), x).item() == pytest.approx(expected / 2, rel=1e-5)


def test_phase_loss_of_a_sign_flip_is_pi() -> None:
    """-x has every bin's phase moved by pi: the instantaneous phase term is pi, and the group delay and
    instantaneous frequency terms (differences of phases, both moved alike) are 0."""
    x = noise()
    loss = MultiResolutionPhaseLoss(**GEOMETRY, min_relative_power=1e-6)
    assert loss(-x, x).item() == pytest.approx(math.pi, abs=1e-4)


def test_phase_loss_of_a_delay() -> None:
    """A one-sample delay of a tone at the centre of bin k multiplies its spectrum by exp(-j 2 pi k / N)
    in every frame: the instantaneous phase term is 2 pi k / N, and the group delay and instantaneous
    frequency terms are 0 (the tone's bins k - 1, k, k + 1 and its frames all move alike). Only the few
    edge frames (reflected padding) are off; the signal is long enough that they weigh little."""
    fft_size, hop_size, bin_index = 256, 64, 16
    time = torch.arange(32768 + 1, dtype=torch.float64)
    tone = torch.cos(2 * math.pi * bin_index / fft_size * time)
    target, delayed = tone[1:].view(1, 1, -1), tone[:-1].view(1, 1, -1)  # delayed[n] = target[n - 1]
    window = torch.hann_window(fft_size, dtype=torch.float64)
    spectra = [torch.stft(signal[0], fft_size, hop_size, window=window, center=True, pad_mode="reflect",
                          return_complex=True)[:, :, 8:-8] for signal in (delayed, target)]  # fmt: skip
    phase_shift = anti_wrap(spectra[0].angle() - spectra[1].angle())[0, bin_index - 1 : bin_index + 2]
    torch.testing.assert_close(phase_shift, torch.full_like(phase_shift, 2 * math.pi * bin_index / fft_size))
    loss = MultiResolutionPhaseLoss([fft_size], [hop_size], [fft_size], min_relative_power=0.05).double()
    assert loss(delayed, target).item() == pytest.approx(2 * math.pi * bin_index / fft_size, rel=0.02)


def test_time_domain_l1_of_a_scaled_signal() -> None:
    x = noise()
    assert TimeDomainL1Loss()(0.5 * x, x).item() == pytest.approx(0.5 * x.abs().mean().item(), rel=1e-6)
    assert TimeDomainL1Loss()(-x, x).item() == pytest.approx(2 * x.abs().mean().item(), rel=1e-6)


def test_phase_loss_gradient_is_finite_at_silence() -> None:
    predicted = torch.zeros(1, 1, 1024, requires_grad=True)
    target = noise(1, 1024)
    target[..., :512] = 0
    loss = MultiResolutionPhaseLoss(**GEOMETRY)(predicted + 1e-3 * noise(1, 1024, seed=1), target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(predicted.grad).all()


def test_the_config_switches_them_on_with_their_weights() -> None:
    config = {"use_complex_stft_loss": True, "complex_stft_loss_params": GEOMETRY, "lambda_complex_stft_loss": 1.0,
              "use_phase_loss": True, "phase_loss_params": GEOMETRY, "lambda_phase_loss": 0.1,
              "use_time_l1_loss": True, "lambda_time_l1_loss": 10.0}  # fmt: skip
    criteria = build_criteria(config, torch.device("cpu"))
    assert {"complex_stft", "phase", "time_l1"} <= set(criteria)
    assert isinstance(criteria["time_l1"], LOSSES["time_l1"])
    assert "phase" not in build_criteria({}, torch.device("cpu"))  # absent: off
    with pytest.raises(CodecError, match="lambda_phase_loss"):
        build_criteria({"use_phase_loss": True}, torch.device("cpu"))
