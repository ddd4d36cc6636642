"""Outputs are never replaced by surprise, clipping is reported, and bad audio in is refused with nothing written."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import OFFICIAL, REPO, official_path
from utils.audio import read_audio, warn_if_clipping, wav_frames, write_audio
from utils.errors import CodecError

RATE = 48000


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=OFFICIAL,
                          capture_output=True, text=True, timeout=120)


def assert_one_error(result: subprocess.CompletedProcess, words: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr


@pytest.fixture
def speech(tmp_path) -> str:
    audio, _ = sf.read(official_path("input", "test_48k.wav"))
    path = tmp_path / "in.wav"
    sf.write(path, audio[: RATE // 2], RATE, "PCM_16")
    return str(path)


def test_codec_refuses_to_replace_without_force(tmp_path, speech: str) -> None:
    packed, decoded = tmp_path / "x.adc", tmp_path / "x.wav"
    packed.write_bytes(b"precious")
    assert_one_error(run("codec.py", "encode", "--model", "vctk_sym", "-i", speech, "-o", str(packed)),
                     "-f/--force")
    assert packed.read_bytes() == b"precious"
    result = run("codec.py", "encode", "--model", "vctk_sym", "-i", speech, "-o", str(packed), "--force")
    assert result.returncode == 0, result.stderr
    decoded.write_bytes(b"precious")
    assert_one_error(run("codec.py", "decode", "-i", str(packed), "-o", str(decoded)), "-f/--force")
    assert decoded.read_bytes() == b"precious"
    assert run("codec.py", "decode", "-i", str(packed), "-o", str(decoded), "-f").returncode == 0
    assert sf.info(decoded).frames == RATE // 2


def test_demo_file_replaces_and_says_so(tmp_path, speech: str) -> None:
    out = tmp_path / "out.wav"
    first = run("demoFile.py", "--model", "vctk_sym", "-i", speech, "-o", str(out))
    assert first.returncode == 0 and "replaced" not in first.stderr
    out.write_bytes(b"old")
    second = run("demoFile.py", "--model", "vctk_sym", "-i", speech, "-o", str(out))
    assert second.returncode == 0 and f"replaced the existing {out}" in second.stderr
    assert sf.info(out).frames == RATE // 2


def test_clipping_is_warned_with_the_peak(tmp_path, caplog) -> None:
    loud = np.sin(np.linspace(0, 200, RATE))[:, None] * 1.5
    with caplog.at_level(logging.WARNING):
        write_audio(str(tmp_path / "loud.wav"), loud, RATE)
    assert "clips: peak 1.500 (+3.5 dBFS)" in caplog.text and "3.5 dB quieter" in caplog.text
    assert np.abs(sf.read(tmp_path / "loud.wav")[0]).max() <= 1.0
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        write_audio(str(tmp_path / "quiet.wav"), loud / 2, RATE)
        write_audio(str(tmp_path / "float.wav"), loud, RATE, "FLOAT")  # float keeps the peak: nothing cut
    assert caplog.text == ""


def test_non_finite_decoded_audio_is_refused_and_not_written(tmp_path, caplog) -> None:
    """NaN would be stored as a full-scale constant: the writers refuse it, and the clipping check names no nan peak."""
    decoded = np.zeros((RATE, 2))
    decoded[100:, 1] = np.nan
    for subtype in ("PCM_16", "FLOAT"):
        with pytest.raises(CodecError, match=r"out.wav: 47900 of its 96000 decoded samples are NaN or infinite "
                                             r"\(a damaged or diverged model\): decode with a sound checkpoint"):
            write_audio(str(tmp_path / "out.wav"), decoded, RATE, subtype)
    assert os.listdir(tmp_path) == []
    with caplog.at_level(logging.WARNING), pytest.raises(CodecError, match="NaN or infinite"):
        warn_if_clipping("out.wav", decoded)
    assert caplog.text == ""


def test_audio_written_as_it_is_made_is_the_same_file(tmp_path, caplog) -> None:
    """write_audio_blocks (what `codec.py decode` writes with, a decoded piece at a time) gives the bytes
    write_audio gives for the joined audio, and one clipping warning counting every block's samples."""
    from utils.audio import write_audio_blocks

    loud = np.sin(np.linspace(0, 300, 3 * RATE))[:, None] * np.array([1.5, 0.5])
    pieces = [loud[:1000], loud[1000:1000], loud[1000:RATE], loud[RATE:]]
    logs = []
    for subtype in ("PCM_16", "FLOAT"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            write_audio(str(tmp_path / "whole.wav"), loud, RATE, subtype)
            whole_log = caplog.text.replace("whole.wav", "x.wav")
            caplog.clear()
            assert write_audio_blocks(str(tmp_path / "blocks.wav"), iter(pieces), RATE, 2, subtype) == 3 * RATE
        assert caplog.text.replace("blocks.wav", "x.wav") == whole_log
        assert (tmp_path / "blocks.wav").read_bytes() == (tmp_path / "whole.wav").read_bytes()
        logs.append(whole_log)
    assert "clips: peak 1.500" in logs[0] and logs[0].count("clips") == 1 and logs[1] == ""  # (float keeps it)


def test_audio_made_in_blocks_that_fails_leaves_no_file(tmp_path) -> None:
    """A NaN in a later block, or any error while the blocks are made, stops the writing: the output
    keeps what it held and no temp file is left; the maker's error comes through as it was raised."""
    from utils.audio import write_audio_blocks

    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    bad = np.zeros((RATE, 1))
    bad[7] = np.inf
    with pytest.raises(CodecError, match=r"out.wav: the decoded audio holds NaN or infinite samples from 2.00 s on "
                                         r"\(a damaged or diverged model\): decode with a sound checkpoint"):
        write_audio_blocks(str(out), iter([np.zeros((RATE, 1))] * 2 + [bad]), RATE, 1)

    def failing():
        yield np.zeros((RATE, 1))
        raise ValueError("the decoder's own failure")

    with pytest.raises(ValueError, match="^the decoder's own failure$"):
        write_audio_blocks(str(out), failing(), RATE, 1)
    assert os.listdir(tmp_path) == ["out.wav"] and out.read_bytes() == b"old"


def test_a_float_input_beyond_full_scale_is_warned(tmp_path) -> None:
    """A float file louder than full scale is coded (it is audio), with a warning naming its peak."""
    loud, quiet = tmp_path / "loud.wav", tmp_path / "quiet.wav"
    wave = np.sin(np.linspace(0, 200, RATE // 2))[:, None].astype(np.float32)
    sf.write(loud, 2 * wave, RATE, subtype="FLOAT")
    sf.write(quiet, wave / 2, RATE, subtype="FLOAT")
    result = run("codec.py", "encode", "--model", "vctk_sym", "-i", str(loud), "-o", str(tmp_path / "x.adc"))
    assert result.returncode == 0, result.stderr
    assert f"{loud}: " in result.stderr and "beyond full scale (peak 2.000, +6.0 dBFS)" in result.stderr
    assert "6.0 dB down" in result.stderr
    result = run("codec.py", "encode", "--model", "vctk_sym", "-i", str(quiet), "-o", str(tmp_path / "y.adc"))
    assert result.returncode == 0 and "full scale" not in result.stderr, result.stderr


@pytest.mark.parametrize("script, bad", [("demoFile.py", np.nan), ("codec.py", -np.inf)])
def test_non_finite_samples_are_refused(tmp_path, script: str, bad: float) -> None:
    audio = 0.1 * np.random.default_rng(0).standard_normal((RATE // 2, 2)).astype(np.float32)
    audio[6000, 1] = bad
    source, out = tmp_path / "bad.wav", tmp_path / ("out.wav" if script == "demoFile.py" else "out.adc")
    sf.write(source, audio, RATE, "FLOAT")
    command = ["--model", "vctk_sym", "-i", str(source), "-o", str(out)]
    result = run(script, *(["encode", *command] if script == "codec.py" else command))
    assert_one_error(result, f"{source} has a non-finite sample")
    assert f"({bad}) at 0.125000 s (frame 6000, channel 1)" in result.stderr
    assert os.listdir(tmp_path) == ["bad.wav"]


@pytest.mark.parametrize("script, folder_mode", [("codec.py", False), ("codec.py", True), ("demoFile.py", False)])
def test_a_file_that_resamples_to_no_samples_is_refused(tmp_path, script: str, folder_mode: bool) -> None:
    """One sample at 192 kHz is none at 48 kHz: refused before the coding (it wrote an .adc, then failed)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    sf.write(inputs / "one.wav", np.array([0.1]), 4 * RATE, "PCM_16")
    source = inputs if folder_mode else inputs / "one.wav"
    out = tmp_path / ("out" if folder_mode else "one.wav" if script == "demoFile.py" else "one.adc")
    command = ["--model", "vctk_sym", "--resample", "-i", str(source), "-o", str(out)]
    result = run(script, *(["encode", *command] if script == "codec.py" else command))
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line.strip() for line in result.stderr.splitlines() if "error: " in line]
    assert errors[0] == (f"error: {inputs / 'one.wav'} is too short to code at the model's rate: its 1 sample(s) at "
                         "192000 Hz resample to none at 48000 Hz; give a longer file")
    assert os.listdir(tmp_path) == ["in"]


@pytest.mark.parametrize("script, rate", [("codec.py", 1), ("demoFile.py", 999), ("bin/evaluate.py", 768_001)])
def test_a_header_that_declares_no_audio_rate_is_refused(tmp_path, script: str, rate: int) -> None:
    """1 Hz resampled to 48 kHz asked soxr for 48000 samples per sample (a MemoryError, or minutes of work)."""
    source = tmp_path / "odd.wav"
    sf.write(source, np.zeros(2000), rate, "PCM_16")
    if script == "bin/evaluate.py":
        result = run(script, str(source), str(source))
    else:
        out = tmp_path / ("out.adc" if script == "codec.py" else "out.wav")
        command = ["--model", "vctk_sym", "--resample", "-i", str(source), "-o", str(out)]
        result = run(script, *(["encode", *command] if script == "codec.py" else command))
    assert_one_error(result, f"{source} declares {rate} Hz, not an audio rate: fix its header")
    assert os.listdir(tmp_path) == ["odd.wav"]
    for edge in (1000, 768_000):
        sf.write(source, np.zeros(2000), edge, "PCM_16")
        assert read_audio(source)[1] == edge


def truncated_copy(speech: str, path) -> tuple[int, int]:
    data = open(speech, "rb").read()
    path.write_bytes(data[: len(data) - 2 * 5000 - 1])  # 5000 frames and one odd byte short
    return wav_frames(str(path))


@pytest.mark.parametrize("script", ["demoFile.py", "codec.py"])
def test_truncated_wav_is_refused_unless_allowed(tmp_path, speech: str, script: str) -> None:
    source = tmp_path / "cut.wav"
    declared, present = truncated_copy(speech, source)
    assert (declared, present) == (RATE // 2, RATE // 2 - 5001)
    out = tmp_path / ("out.wav" if script == "demoFile.py" else "out.adc")
    command = ["--model", "vctk_sym", "-i", str(source), "-o", str(out)]
    if script == "codec.py":
        command = ["encode", *command]
    assert_one_error(run(script, *command), f"{source} is truncated: header says {declared} frames, file has "
                     f"{present}; re-transfer it, or pass --allow-truncated to code what is there")
    assert sorted(os.listdir(tmp_path)) == ["cut.wav", "in.wav"]
    result = run(script, *command, "--allow-truncated")
    assert result.returncode == 0, result.stderr
    assert "truncated" in result.stderr
    if script == "demoFile.py":
        assert sf.info(out).frames == present


def test_reader_accepts_complete_and_unfinished_headers(tmp_path, speech: str) -> None:
    assert wav_frames(speech) == (RATE // 2, RATE // 2)
    assert read_audio(speech)[0].shape == (RATE // 2, 1)
    unfinished = bytearray(open(speech, "rb").read())  # a recorder that never wrote the data size
    position = unfinished.index(b"data") + 4
    unfinished[position:position + 4] = b"\xff\xff\xff\xff"
    (tmp_path / "live.wav").write_bytes(bytes(unfinished))
    assert wav_frames(str(tmp_path / "live.wav")) is None
    sf.write(tmp_path / "x.flac", np.zeros(100), RATE)
    assert wav_frames(str(tmp_path / "x.flac")) is None
    truncated_copy(speech, tmp_path / "cut.wav")
    with pytest.raises(CodecError, match="truncated"):
        read_audio(str(tmp_path / "cut.wav"))
    assert read_audio(str(tmp_path / "cut.wav"), allow_truncated=True)[0].shape == (RATE // 2 - 5001, 1)


def test_a_file_read_a_block_at_a_time_is_read_audio_in_pieces_and_checked_as_it(tmp_path, speech: str,
                                                                                   caplog) -> None:
    """AudioInput, what the coders read a long file with: the blocks join to read_audio's samples, and a
    bad file is refused with read_audio's words (a NaN named at its own frame, however late it comes)."""
    from utils.audio import AudioInput

    audio = AudioInput(speech, 5000, dtype="float32")
    assert (audio.rate, audio.channels, audio.frames) == (RATE, 1, RATE // 2)
    blocks = list(audio)
    assert [len(block) for block in blocks] == [5000] * 4 + [RATE // 2 - 20000]
    np.testing.assert_array_equal(np.concatenate(blocks), read_audio(speech, dtype="float32")[0])
    loud = np.zeros((12000, 2))
    loud[300, 1], loud[11000, 0], loud[11001, 0] = 1.5, -2.0, np.nan
    sf.write(tmp_path / "loud.wav", loud, RATE, "FLOAT")
    with pytest.raises(CodecError) as whole:
        read_audio(str(tmp_path / "loud.wav"))
    with pytest.raises(CodecError) as blocked:
        list(AudioInput(str(tmp_path / "loud.wav"), 4000))
    assert str(blocked.value) == str(whole.value) and "(frame 11001, channel 0)" in str(blocked.value)
    loud[11001, 0] = 0.0
    sf.write(tmp_path / "loud.wav", loud, RATE, "FLOAT")
    with caplog.at_level(logging.WARNING, logger="utils.audio"):
        assert sum(len(block) for block in AudioInput(str(tmp_path / "loud.wav"), 4000)) == 12000
    assert [record.getMessage() for record in caplog.records] == [
        f"{tmp_path / 'loud.wav'}: 2 samples lie beyond full scale (peak 2.000, +6.0 dBFS); the codec is made for "
        "[-1, 1]: scale the file about 6.0 dB down for a faithful coding"]
    sf.write(tmp_path / "none.wav", np.zeros((0, 1)), RATE)  # a header and no samples
    with pytest.raises(CodecError, match="holds no samples"):
        list(AudioInput(str(tmp_path / "none.wav"), 4000))
    truncated_copy(speech, tmp_path / "cut.wav")
    with pytest.raises(CodecError, match="is truncated: header says"):
        AudioInput(str(tmp_path / "cut.wav"), 4000)  # before any block is read
    assert sum(map(len, AudioInput(str(tmp_path / "cut.wav"), 4000, allow_truncated=True))) == RATE // 2 - 5001
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVE not audio")
    with pytest.raises(CodecError, match=r"cannot read .*junk.wav as audio \("):
        AudioInput(str(tmp_path / "junk.wav"), 4000)
