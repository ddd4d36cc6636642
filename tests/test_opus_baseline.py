"""Opus baseline: real bitrate near the request, decoded output aligned with the input."""

import numpy as np
import pytest

from utils.errors import CodecError
from utils.eval.opus_baseline import estimate_lag, ogg_packet_sizes, opus_available, opus_roundtrip
from utils.eval.probe import speech_like_signal

needs_opus = pytest.mark.skipif(
    not opus_available(), reason="opusenc/opusdec not found: install Debian opus-tools (bash utils/system_deps.sh)"
)


@pytest.mark.parametrize("lag", [-7, 0, 2, 130])
def test_estimate_lag_finds_a_known_shift(lag):
    signal = speech_like_signal(1.0, 16000, seed=2)
    shifted = np.roll(signal, lag)
    assert estimate_lag(signal, shifted, max_lag=200) == lag


@needs_opus
@pytest.mark.parametrize("sample_rate", [48000, 24000, 16000])
def test_opus_roundtrip_bitrate_and_alignment(sample_rate):
    signal = speech_like_signal(3.0, sample_rate, seed=0)
    result = opus_roundtrip(signal, sample_rate, bitrate_kbps=12.8)
    assert result.sample_rate == sample_rate
    assert result.audio.shape == signal.shape and result.audio.dtype == np.float32
    assert result.bitrate_kbps == pytest.approx(12.8, rel=0.2)
    assert 0.5 * 12.8 < result.payload_kbps < result.bitrate_kbps
    assert np.corrcoef(signal, result.audio)[0, 1] > 0.8
    assert estimate_lag(signal, result.audio) == 0


@needs_opus
def test_opus_roundtrip_follows_requested_bitrate():
    signal = speech_like_signal(3.0, 48000, seed=1)
    low = opus_roundtrip(signal, 48000, bitrate_kbps=6.0).bitrate_kbps
    high = opus_roundtrip(signal, 48000, bitrate_kbps=24.0).bitrate_kbps
    assert low < high


@pytest.mark.parametrize("kbps", [0, -3, 5.9, 300])
def test_a_bitrate_opusenc_would_not_keep_is_refused(kbps):
    """Outside 6-256 kbps opusenc quietly codes at a rate of its own (its default for -3, 213 kbps for 300)."""
    with pytest.raises(CodecError, match=f"Opus bitrate {kbps:g}: Opus codes 6 to 256 kbps per channel"):
        opus_roundtrip(np.zeros(4800, np.float32), 48000, bitrate_kbps=kbps)


@needs_opus
def test_opus_roundtrip_rejects_non_mono_input():
    with pytest.raises(CodecError):
        opus_roundtrip(np.zeros((100, 2), np.float32), 48000)


@needs_opus
def test_ogg_packets_are_two_headers_and_one_packet_per_20_ms_frame(tmp_path):
    import subprocess

    import soundfile as sf

    sf.write(tmp_path / "in.wav", speech_like_signal(1.0, 48000), 48000)
    encoded = tmp_path / "out.opus"
    subprocess.run(
        ["opusenc", "--bitrate", "12.8", "--framesize", "20", "--quiet", tmp_path / "in.wav", encoded], check=True
    )
    sizes = ogg_packet_sizes(encoded.read_bytes())
    assert 2 + 50 <= len(sizes) <= 2 + 52  # 50 frames of 20 ms, plus the encoder's lookahead
    assert sizes[0] == 19  # OpusHead, mono, no channel mapping table


def test_ogg_packet_sizes_rejects_other_data():
    with pytest.raises(CodecError):
        ogg_packet_sizes(b"RIFF" + bytes(100))
