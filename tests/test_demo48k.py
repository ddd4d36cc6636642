"""The shipped model: demo48k loads from the repository, codes the bundled clip, and its entropy table works."""

from __future__ import annotations

import os

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO
from utils.audiodec import StreamingCodec
from utils.bitstream.adc import decode_adc, encode_adc
from utils.bitstream.codec_file import entropy_table_path, load_entropy_model, stream_header
from utils.eval.metrics import log_mel_distance

CLIP = os.path.join(REPO, "data", "demo", "alsa_speakers.wav")


@pytest.fixture(scope="module")
def codec() -> StreamingCodec:
    return StreamingCodec.from_name("demo48k", root=REPO)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    audio, rate = sf.read(CLIP, dtype="float32")
    assert rate == 48000 and audio.ndim == 1
    return audio[: 4 * rate]  # the first four words are enough


def test_demo48k_is_the_documented_layout(codec) -> None:
    assert (codec.sample_rate, codec.hop_length, codec.n_codebooks, codec.codebook_size) == (48000, 300, 8, 1024)
    assert codec.bitrate() == 12800
    assert os.path.getsize(codec.encoder_checkpoint) < 40e6  # the size budget for exp/


def test_demo48k_output_follows_the_input_spectrum(codec, clip) -> None:
    _, decoded = codec.code(codec.streams_from_audio(clip[:, None]))
    decoded = decoded[0, 0].numpy()
    assert decoded.shape == clip.shape and np.all(np.isfinite(decoded))
    ours = log_mel_distance(clip, decoded, 48000)
    # Far closer to the input than a signal of the same loudness but another spectrum, or silence.
    noise = np.random.default_rng(0).standard_normal(clip.shape).astype(np.float32) * clip.std()
    assert ours < 0.6 * log_mel_distance(clip, noise, 48000)
    assert ours < 0.6 * log_mel_distance(clip, np.zeros_like(clip) + 1e-4, 48000)


def test_demo48k_entropy_table_shrinks_real_speech_losslessly(codec, clip) -> None:
    table = load_entropy_model(codec, entropy_table_path(codec.encoder_checkpoint))
    codes, _ = codec.code(codec.streams_from_audio(clip[:, None]))
    codes = codes.numpy()
    header = stream_header(codec, 1, len(clip), codec.n_codebooks)
    raw, packed = encode_adc(header, codes), encode_adc(header, codes, table)
    _, back = decode_adc(packed, table)
    np.testing.assert_array_equal(back, codes)
    # its codes are used almost evenly (958-1009 of 1024 per codebook), so the saving is a few percent
    # (9 % on corpus/test, exp/README.md)
    assert len(packed) < 0.95 * len(raw)


def test_demo48k_file_output_is_aligned_with_its_input(codec, clip) -> None:
    """demo48k's output lags its input by its config's output_delay (325 samples); whole-file coding
    takes the lag off, so the waveforms match best unshifted."""
    from utils.eval.metrics import si_sdr

    assert codec.output_delay == 325
    _, decoded = codec.code(codec.streams_from_audio(clip[:, None]))
    decoded = decoded[0, 0].numpy()
    aligned = si_sdr(clip, decoded)
    for shift in (30, 325):
        assert aligned > si_sdr(clip[:-shift], decoded[shift:]) + 1, shift  # the output later than the input
        assert aligned > si_sdr(clip[shift:], decoded[:-shift]) + 1, shift  # earlier
