"""Objective metrics on synthetic speech-like signals: known values for identical, scaled and noisy pairs."""

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from utils.audio import AUDIO_EXTENSIONS
from utils.errors import CodecError
from utils.eval.metrics import (
    evaluate_pair,
    format_table,
    log_mel_distance,
    log_mel_spectrogram,
    match_audio_files,
    mean_row,
    metric_names,
    pesq_wb,
    scored_counts,
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


@pytest.fixture(scope="module")
def pair_48k() -> tuple[np.ndarray, np.ndarray]:
    """A 48 kHz pair (rate changes go through soxr, which a (1, T) array used to crash)."""
    reference = speech_like_signal(1.0, 48000, seed=5)
    return reference, (reference + 0.3 * noise_at_snr(reference, 10.0)).astype(np.float32)


@pytest.mark.parametrize("layout", [lambda x: x[:, None], lambda x: x[None, :]], ids=["(T,1)", "(1,T)"])
def test_single_channel_arrays_score_as_their_samples(pair_48k, layout):
    # (the same samples at another address may be summed in another order: equal to rounding)
    reference, degraded = pair_48k
    expected = evaluate_pair(reference, degraded, 48000)
    assert evaluate_pair(layout(reference), layout(degraded), 48000) == pytest.approx(expected, rel=1e-9)
    assert pesq_wb(layout(reference), layout(degraded), 48000) == pytest.approx(expected["pesq_wb"], rel=1e-9)
    assert log_mel_distance(layout(reference), layout(degraded), 48000) == pytest.approx(
        expected["log_mel_distance"], rel=1e-6)
    assert np.allclose(log_mel_spectrogram(layout(reference), 48000), log_mel_spectrogram(reference, 48000))
    half_rate = degraded[::2].copy()
    resampled = evaluate_pair(layout(reference), layout(half_rate), 48000, degraded_sample_rate=24000)
    assert resampled == pytest.approx(evaluate_pair(reference, half_rate, 48000, degraded_sample_rate=24000), rel=1e-9)


@pytest.mark.parametrize(("make", "message"), [
    (lambda x: np.stack([x, x]), r"shape \(2, 48000\): the metrics score one channel"),
    (lambda x: np.stack([x, x], axis=1), r"shape \(48000, 2\): the metrics score one channel"),
    (lambda x: x[None, None], r"shape \(1, 1, 48000\)"),
    (lambda x: np.float32(0.5), r"shape \(\)"),
    (lambda x: (x * 32767).astype(np.int16), r"int16 samples: .* \(int16: x / 32768\)"),
    (lambda x: x.astype(np.complex64), r"complex \(complex64\)"),
], ids=["(2,T)", "(T,2)", "(1,1,T)", "scalar", "int16", "complex"])
def test_multi_channel_integer_and_complex_signals_are_refused(pair_48k, make, message):
    reference, degraded = pair_48k
    for call in (lambda: evaluate_pair(make(reference), degraded, 48000),
                 lambda: evaluate_pair(reference, make(degraded), 48000, degraded_sample_rate=24000),
                 lambda: pesq_wb(make(reference), degraded, 48000),
                 lambda: si_sdr(reference, make(degraded)),
                 lambda: log_mel_spectrogram(make(reference), 48000)):
        with pytest.raises(CodecError, match=message):
            call()


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


def test_a_silent_reference_leaves_every_metric_undefined_with_one_warning(speech, caplog):
    with caplog.at_level(logging.WARNING, logger="utils.eval.metrics"):
        scores = evaluate_pair(np.zeros_like(speech), speech, SAMPLE_RATE, name="quiet.wav")
    assert tuple(scores) == metric_names(False) and all(np.isnan(value) for value in scores.values())
    assert [record.getMessage() for record in caplog.records] == [
        "quiet.wav: the reference is silent: every metric is undefined, reported as NaN"]


def test_a_silent_decode_has_no_pesq_or_si_sdr_and_the_worst_stoi(speech, caplog):
    with caplog.at_level(logging.WARNING, logger="utils.eval.metrics"):
        scores = evaluate_pair(speech, np.zeros_like(speech), SAMPLE_RATE, name="broken.wav")
    assert np.isnan(scores["pesq_wb"]) and np.isnan(scores["si_sdr"])
    assert abs(scores["stoi"]) < 0.05 and abs(scores["estoi"]) < 0.05  # unintelligible: pystoi's own score
    assert np.isfinite(scores["log_mel_distance"])
    assert any("broken.wav: decoded signal is silent" in record.getMessage() for record in caplog.records)


def test_si_sdr_of_a_constant_signal_is_nan_not_an_eps_artefact(speech):
    assert np.isnan(si_sdr(np.zeros_like(speech), speech))
    assert np.isnan(si_sdr(speech, np.zeros_like(speech)))
    assert np.isnan(si_sdr(np.full_like(speech, 0.25), speech))  # nothing left once its mean is removed


def test_means_cover_the_finite_entries_and_say_how_many():
    rows = [{"file": "a", "sample_rate": 48000, "seconds": 1.0, "pesq_wb": 2.0, "kbps": 10.0},
            {"file": "b", "sample_rate": 48000, "seconds": 3.0, "pesq_wb": float("nan"), "kbps": 6.0}]
    mean = mean_row(rows)
    assert mean == {"file": "mean", "pesq_wb": 2.0, "kbps": 7.0}  # no sample_rate; kbps over the total duration
    assert scored_counts(rows) == {"pesq_wb": 1, "kbps": 2}


def test_table_columns_fit_their_values():
    rows = [{"file": "quiet.wav", "pesq_wb": 1.5, "stoi": 0.5, "estoi": 0.4, "si_sdr": -149.959,
             "log_mel_distance": 3.828},
            {"file": "scored", "pesq_wb": 1, "stoi": 1, "estoi": 1, "si_sdr": 1, "log_mel_distance": 1}]
    lines = format_table(rows, metric_names(False)).splitlines()
    assert lines[1].split() == ["quiet.wav", "1.500", "0.500", "0.400", "-149.959", "3.828"]
    assert lines[2].split() == ["scored", "1", "1", "1", "1", "1"]
    header = lines[0]
    assert [header.index(label) for label in ("SI-SDR", "LogMel")] == [lines[1].index("-149.959"),
                                                                       lines[1].index("3.828")]


def test_table_with_a_baseline_fits_long_labels_and_values():
    row = {"file": "x", **{name: -100.0 for name in metric_names(False)},
           **{f"opus_{name}": 12.5 for name in metric_names(False)}}
    lines = format_table([row], metric_names(False), baseline_name="opus").splitlines()
    assert lines[1].split() == ["ours", "opus"] * len(metric_names(False))
    assert lines[2].split()[1:] == ["-100.000", "12.500"] * len(metric_names(False))


@pytest.mark.parametrize("suffix", [suffix for suffix in AUDIO_EXTENSIONS if suffix not in (".mp3", ".oga")])
def test_folders_match_every_audio_type_the_readers_take(tmp_path: Path, suffix: str):
    formats = {".ogg": "OGG", ".aiff": "AIFF", ".aif": "AIFF", ".wav": "WAV", ".flac": "FLAC"}
    for side in ("ref", "deg"):
        (tmp_path / side).mkdir()
    sf.write(tmp_path / "ref" / f"x{suffix}", speech_like_signal(0.5, 16000), 16000, format=formats[suffix])
    sf.write(tmp_path / "deg" / "x.wav", speech_like_signal(0.5, 16000), 16000)
    assert [name for name, _, _ in match_audio_files(tmp_path / "ref", tmp_path / "deg")] == [f"x{suffix}"]


def test_two_files_of_one_name_but_their_extension_are_refused(tmp_path: Path):
    for side in ("ref", "deg"):
        (tmp_path / side).mkdir()
        sf.write(tmp_path / side / "x.wav", speech_like_signal(0.5, 16000), 16000)
    sf.write(tmp_path / "deg" / "x.flac", speech_like_signal(0.5, 16000), 16000)
    with pytest.raises(CodecError, match=r"degraded files .*x.flac and .*x.wav differ only in their extension"):
        match_audio_files(tmp_path / "ref", tmp_path / "deg")


def test_pesq_and_stoi_take_the_reference_first(speech):
    """pesq_wb and stoi give the libraries' scores with the reference first, as both document; the
    swapped pair scores otherwise (a decode judged as the reference would go unnoticed)."""
    from pesq import pesq
    from pystoi import stoi as pystoi_stoi

    degraded = (speech + noise_at_snr(speech, 20.0)).astype(np.float32)
    reference = speech.astype(np.float32)
    score = pesq_wb(reference, degraded, SAMPLE_RATE)
    assert score == pytest.approx(pesq(SAMPLE_RATE, reference, degraded, "wb"), abs=1e-9)
    assert abs(score - pesq_wb(degraded, reference, SAMPLE_RATE)) > 0.2
    for extended in (False, True):
        score = stoi(reference, degraded, SAMPLE_RATE, extended)
        library = pystoi_stoi(reference.astype(np.float64), degraded.astype(np.float64), SAMPLE_RATE,
                              extended=extended)  # fmt: skip
        assert score == pytest.approx(library, abs=1e-9)
        assert abs(score - stoi(degraded, reference, SAMPLE_RATE, extended)) > 0.05
