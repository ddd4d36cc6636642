"""Objective metrics on synthetic speech-like signals: known values for identical, scaled and noisy pairs."""

import numpy as np
import pytest

from utils.errors import CodecError
from utils.eval.metrics import (
    evaluate_pair,
    log_mel_distance,
    metric_names,
    pesq_wb,
    si_sdr,
    snr_db,
    stoi,
    visqol_available,
    visqol_speech,
)
from utils.eval.probe import speech_like_signal

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    return speech_like_signal(3.0, SAMPLE_RATE, seed=0)


def noise_at_snr(reference: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    """White noise orthogonal to the zero-mean reference, at exactly ``snr_db`` below it."""
    reference = reference.astype(np.float64) - reference.mean()
    noise = np.random.default_rng(seed).standard_normal(len(reference))
    noise -= noise.mean()
    noise -= np.dot(noise, reference) / np.dot(reference, reference) * reference
    return noise * np.sqrt(np.dot(reference, reference) / np.dot(noise, noise) / 10 ** (snr_db / 10))


def test_pesq_identical_is_maximal_and_noise_lowers_it(speech):
    assert pesq_wb(speech, speech, SAMPLE_RATE) == pytest.approx(4.64, abs=0.05)
    noisy = speech + noise_at_snr(speech, 10.0)
    assert pesq_wb(speech, noisy, SAMPLE_RATE) < 3.0


def test_pesq_resamples_48k_input():
    speech_48k = speech_like_signal(2.0, 48000, seed=3)
    assert pesq_wb(speech_48k, speech_48k, 48000) == pytest.approx(4.64, abs=0.05)


def test_stoi_and_estoi_of_identical_signal_are_one(speech):
    assert stoi(speech, speech, SAMPLE_RATE) == pytest.approx(1.0, abs=1e-6)
    assert stoi(speech, speech, SAMPLE_RATE, extended=True) == pytest.approx(1.0, abs=1e-6)
    noisy = speech + noise_at_snr(speech, 0.0)
    assert stoi(speech, noisy, SAMPLE_RATE, extended=True) < 0.9


def test_si_sdr_ignores_scale(speech):
    assert si_sdr(speech, 0.37 * speech) > 100.0


@pytest.mark.parametrize("level", [-5.0, 0.0, 10.0, 25.0])
def test_si_sdr_matches_known_snr(speech, level):
    noisy = speech + noise_at_snr(speech, level)
    assert si_sdr(speech, noisy) == pytest.approx(level, abs=0.1)


def test_snr_db_of_known_noise_identical_signals_and_any_rank(speech):
    noise = np.random.default_rng(1).standard_normal(speech.shape)
    noise *= np.sqrt(np.sum(speech.astype(np.float64) ** 2) / np.sum(noise**2)) / 10  # exactly 20 dB below
    assert snr_db(speech, speech + noise) == pytest.approx(20.0, abs=1e-9)
    assert snr_db(speech, speech) == float("inf")
    stereo = np.stack([speech, speech], axis=1)
    assert snr_db(stereo, stereo + np.stack([noise, noise], axis=1)) == pytest.approx(20.0, abs=1e-9)


def test_log_mel_distance_zero_for_identical_and_grows_with_noise(speech):
    assert log_mel_distance(speech, speech, SAMPLE_RATE) == 0.0
    slight = log_mel_distance(speech, speech + noise_at_snr(speech, 30.0), SAMPLE_RATE)
    strong = log_mel_distance(speech, speech + noise_at_snr(speech, 0.0), SAMPLE_RATE)
    assert 0.0 < slight < strong


def test_evaluate_pair_cuts_to_common_length_and_resamples(speech):
    scores = evaluate_pair(speech, np.concatenate([speech, np.zeros(500, np.float32)]), SAMPLE_RATE)
    assert tuple(scores) == metric_names(False)
    assert scores["si_sdr"] > 100.0 and scores["log_mel_distance"] == 0.0

    speech_48k = speech_like_signal(2.0, 48000, seed=4)
    from utils.audio import resample

    scores = evaluate_pair(speech_48k, resample(speech_48k, 48000, 24000), 48000, degraded_sample_rate=24000)
    assert scores["stoi"] > 0.99


def test_evaluate_pair_rejects_empty_signal():
    with pytest.raises(CodecError):
        evaluate_pair(np.zeros(0, np.float32), np.zeros(0, np.float32), SAMPLE_RATE)


@pytest.mark.skipif(not visqol_available(), reason="optional package visqol (pip install visqol-python) not installed")
def test_visqol_speech_identical_beats_noisy(speech):
    noisy = speech + noise_at_snr(speech, 5.0)
    assert visqol_speech(speech, speech, SAMPLE_RATE) > visqol_speech(speech, noisy, SAMPLE_RATE) + 0.5


def test_pesq_of_a_too_short_or_silent_pair_is_nan():
    assert np.isnan(pesq_wb(np.zeros(SAMPLE_RATE, np.float32), np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE))
    short = speech_like_signal(0.1, SAMPLE_RATE)
    assert np.isnan(pesq_wb(short, short, SAMPLE_RATE))


def test_stoi_of_a_too_short_clip_is_nan():
    short = speech_like_signal(0.3, SAMPLE_RATE)
    assert np.isnan(stoi(short, short, SAMPLE_RATE))
    assert np.isnan(stoi(short, short, SAMPLE_RATE, extended=True))
    for samples in (1, 100, 255):  # under one of pystoi's frames, where it fails outright
        tiny = speech_like_signal(1.0, 8000)[:samples]
        assert np.isnan(stoi(tiny, tiny, 8000)) and np.isnan(stoi(tiny, tiny, 8000, extended=True))
