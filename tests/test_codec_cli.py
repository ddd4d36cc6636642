"""codec.py: .adc round trips equal demoFile, exact sizes, variable bitrate, corruption errors, streaming decode."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from models.autoencoder.AudioDec import Generator
from tests.conftest import MANIFEST, OFFICIAL, REPO, official_path
from utils.audiodec import StreamingCodec
from utils.bitstream.adc import BitstreamError, read_adc
from utils.bitstream.codec_file import decode_codes, decode_stream, encode_to_file
from utils.bitstream.entropy import EntropyModel
from utils.errors import CodecError
from utils.eval.metrics import snr_db

# How a file that names no model is decoded, for a command-line user and a library caller alike.
NAMELESS_FIX = ("decode it with the encoder and decoder checkpoints it was coded with (codec.py decode "
                "--encoder/--decoder; from Python, FileDecoder(load_model, model=KEY) with a load_model(KEY) that "
                "loads them)")

def codec_cli(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, os.path.join(REPO, "codec.py"), *args], cwd=OFFICIAL,
                          capture_output=True, text=True, timeout=300)


def demo_file(python: str, model: str, source: str, output: str) -> None:
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--model", model, "--cuda", "-1",
                             "-i", source, "-o", output], cwd=OFFICIAL, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_round_trip_equals_demo_file(name: str, tmp_path, python: str) -> None:
    source = official_path(MANIFEST[name]["input"])
    packed, decoded, reference = tmp_path / "x.adc", tmp_path / "x.wav", tmp_path / "ref.wav"
    assert codec_cli(python, "encode", "--model", name, "--cuda", "-1", "-i", source, "-o", str(packed)).returncode == 0
    result = codec_cli(python, "decode", "--cuda", "-1", "-i", str(packed), "-o", str(decoded))
    assert result.returncode == 0, result.stderr
    demo_file(python, name, source, str(reference))
    ours, ref = sf.read(decoded)[0], sf.read(reference)[0]
    assert ours.shape == ref.shape and snr_db(ref, ours) >= 60
    header, codes = read_adc(packed)
    offsets = np.arange(codes.shape[1])[:, None] * header.codebook_size
    np.testing.assert_array_equal(codes[0] + offsets, np.load(official_path("ref", f"{name}_codes.npy")))


def test_multichannel_round_trip(tmp_path, python: str) -> None:
    mono, rate = sf.read(official_path("input", "test_48k.wav"))
    sf.write(tmp_path / "stereo.wav", np.stack([mono, mono[::-1] * 0.5], axis=1), rate, "PCM_16")
    packed, decoded, reference = tmp_path / "s.adc", tmp_path / "s.wav", tmp_path / "ref.wav"
    assert codec_cli(python, "encode", "--model", "vctk_v1", "--cuda", "-1", "-i", str(tmp_path / "stereo.wav"),
                     "-o", str(packed)).returncode == 0
    assert "channels      2" in codec_cli(python, "info", str(packed)).stdout
    assert codec_cli(python, "decode", "--cuda", "-1", "-i", str(packed), "-o", str(decoded)).returncode == 0
    demo_file(python, "vctk_v1", str(tmp_path / "stereo.wav"), str(reference))
    ours, ref = sf.read(decoded)[0], sf.read(reference)[0]
    assert ours.shape == ref.shape == (96000, 2) and snr_db(ref, ours) >= 60


def test_a_file_longer_than_a_read_piece_codes_as_its_whole_samples(tmp_path, python: str) -> None:
    """codec.py encode reads a long file a piece at a time (codec.signal_block_samples) as it codes it, as
    demoFile.py does (the pieces' codes: test_streaming.py): the .adc is byte for byte that of the whole
    samples coded at once."""
    entry = MANIFEST["vctk_sym"]
    codec = StreamingCodec.from_checkpoints(official_path(entry["encoder_checkpoint"]),
                                            official_path(entry["decoder_checkpoint"]), name="vctk_sym")
    speech, rate = sf.read(official_path("input", "test_48k.wav"), dtype="float32", always_2d=True)
    length = 2 * codec.signal_block_samples + 4321
    audio = np.tile(0.5 * speech, (length // len(speech) + 1, 1))[:length]
    source, packed = tmp_path / "long.wav", tmp_path / "long.adc"
    sf.write(source, audio, rate, "FLOAT")
    result = codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "-i", str(source), "-o", str(packed))
    assert result.returncode == 0, result.stderr
    encode_to_file(codec, audio, str(tmp_path / "whole.adc"))
    assert packed.read_bytes() == (tmp_path / "whole.adc").read_bytes()
    assert codec_cli(python, "decode", "--cuda", "-1", "-i", str(packed), "-o", str(tmp_path / "d.wav")).returncode == 0
    assert sf.info(tmp_path / "d.wav").frames == length


def full_size_codec() -> StreamingCodec:
    torch.manual_seed(0)
    model = Generator().eval()  # 8 x 1024 codes, hop 300: the released layout
    return StreamingCodec(model, model, 48000, name="fullsize")


def test_ten_seconds_at_12_8_kbps_is_16000_bytes(tmp_path) -> None:
    codec = full_size_codec()
    data = 0.1 * np.random.default_rng(0).standard_normal((480000, 1))
    header = encode_to_file(codec, data, str(tmp_path / "ten.adc"))
    size = os.path.getsize(tmp_path / "ten.adc")
    header_bytes = size - 16000 - 4  # payload, then the CRC32
    assert header.bitrate == 12800 and header.n_frames == 1600
    assert 0 < header_bytes < 128
    for k in (1, 4, 8):
        header = encode_to_file(codec, data, str(tmp_path / f"k{k}.adc"), n_codebooks=k)
        assert header.bitrate == 1600 * k
        assert os.path.getsize(tmp_path / f"k{k}.adc") == header_bytes + 2000 * k + 4


def test_fewer_codebooks_decode_like_demo_file(tmp_path, python: str) -> None:
    source = official_path("input", "test_48k.wav")
    packed, decoded, reference = tmp_path / "k3.adc", tmp_path / "k3.wav", tmp_path / "ref.wav"
    assert codec_cli(python, "encode", "--model", "vctk_sym", "--n_codebooks", "3", "--cuda", "-1", "-i", source,
                     "-o", str(packed)).returncode == 0
    assert "codebooks     3 x 64" in codec_cli(python, "info", str(packed)).stdout
    assert codec_cli(python, "decode", "--cuda", "-1", "-i", str(packed), "-o", str(decoded)).returncode == 0
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--cuda", "-1",
                             "--n_codebooks", "3", "-i", source, "-o", str(reference)], cwd=OFFICIAL,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0
    assert snr_db(sf.read(reference)[0], sf.read(decoded)[0]) >= 60


@pytest.fixture
def packed_file(tmp_path, python: str) -> bytes:
    path = tmp_path / "good.adc"
    result = codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1",
                       "-i", official_path("input", "test_48k.wav"), "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path.read_bytes()


def _assert_decode_fails(python: str, tmp_path, data: bytes, words: str, *extra: str) -> None:
    bad, out = tmp_path / "bad.adc", tmp_path / "out.wav"
    bad.write_bytes(data)
    result = codec_cli(python, "decode", "--cuda", "-1", "-i", str(bad), "-o", str(out), *extra)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    assert words in lines[0]
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_truncated_file(packed_file: bytes, tmp_path, python: str) -> None:
    for cut in (10, len(packed_file) // 2, len(packed_file) - 1):
        _assert_decode_fails(python, tmp_path, packed_file[:cut], "truncated")


def test_flipped_bytes(packed_file: bytes, tmp_path, python: str) -> None:
    for position in (0, 5, 40, 60, len(packed_file) // 2, len(packed_file) - 1):
        data = bytearray(packed_file)
        data[position] ^= 0x10
        _assert_decode_fails(python, tmp_path, bytes(data), "")


def test_wrong_magic_and_future_version(packed_file: bytes, tmp_path, python: str) -> None:
    _assert_decode_fails(python, tmp_path, b"RIFF" + packed_file[4:], "magic")
    _assert_decode_fails(python, tmp_path, packed_file[:4] + bytes([9]) + packed_file[5:], "upgrade")


def test_model_not_installed(packed_file: bytes, tmp_path, python: str) -> None:
    _assert_decode_fails(python, tmp_path, packed_file, "not installed", "--root", str(tmp_path))


def test_decode_as_bytes_arrive() -> None:
    """A raw .adc stream decodes frame by frame as its bytes arrive, to the same audio."""
    entry = MANIFEST["vctk_v1"]
    codec = StreamingCodec.from_checkpoints(official_path(entry["encoder_checkpoint"]),
                                            official_path(entry["decoder_checkpoint"]), name="vctk_v1")
    data, _ = sf.read(official_path("input", "test_48k.wav"), always_2d=True)
    data = data[:30000]  # not a multiple of the hop
    from utils.bitstream.adc import encode_adc, StreamHeader  # noqa: I001

    streams = codec.streams_from_audio(data)
    codes, whole = codec.code(streams)
    header = StreamHeader(48000, 300, 1, 30000, 8, codec.codebook_size, "vctk_v1", codec.decoder_hash())
    blob = encode_adc(header, codes.numpy())
    pieces = [blob[i:i + 7] for i in range(0, len(blob), 7)]
    chunks = list(decode_stream(codec, pieces, frames_per_step=5))
    assert len(chunks) > 10
    streamed = np.concatenate(chunks)
    assert streamed.shape == (30000, 1)
    np.testing.assert_allclose(streamed[:, 0], whole[0, 0].numpy(), atol=1e-5)
    np.testing.assert_allclose(decode_codes(codec, header, codes.numpy())[:, 0], whole[0, 0].numpy(), atol=1e-5)


@pytest.mark.parametrize("frames_per_step", [1, 7])
@pytest.mark.parametrize("entropy", [False, True], ids=["raw_as_one_piece", "entropy_coded"])
def test_a_step_of_decode_stream_costs_the_same_however_many_frames_wait(entropy: bool, frames_per_step: int) -> None:
    """A whole file's frames arrive at once (an entropy-coded payload; a raw file given as one piece):
    each step then takes its frames without copying the ones still waiting, which would make a long
    file quadratic in time (seen here, without timing, as a step's transient allocation, by
    tracemalloc), and the audio is each frame's, in order, cut in steps of `frames_per_step`."""
    import tracemalloc

    from utils.bitstream.adc import StreamHeader, encode_adc

    codec = full_size_codec()
    n_frames = 8000
    codes = np.random.default_rng(0).integers(0, codec.codebook_size, (1, codec.n_codebooks, n_frames))
    header = StreamHeader(48000, 300, 1, n_frames * 300, 8, codec.codebook_size, "", codec.decoder_hash())
    model = EntropyModel.fit(list(codes), codec.codebook_size) if entropy else None
    blob = encode_adc(header, codes, model)
    pieces = [blob[i:i + 4096] for i in range(0, len(blob), 4096)] if entropy else [blob]
    expected = np.repeat(codes[0, 0], 300).astype(np.float32)  # the stand-in decoder's output: codebook 0's codes
    steps: list[int] = []
    allocated: list[int] = []

    def decode(batch: torch.Tensor) -> torch.Tensor:
        current, peak = tracemalloc.get_traced_memory()
        allocated.append(peak - current)  # since the step before
        tracemalloc.reset_peak()
        steps.append(batch.shape[-1])
        return batch[:, :1].float().repeat_interleave(300, -1)

    codec.decode = decode
    decoded = np.full_like(expected, np.nan)
    at = 0
    tracemalloc.start()
    try:
        for audio in decode_stream(codec, pieces, frames_per_step=frames_per_step, entropy_model=model):
            decoded[at:at + audio.shape[0]] = audio[:, 0]
            at += audio.shape[0]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(decoded[:at], expected)
    assert steps == [frames_per_step] * (n_frames // frames_per_step) + [n_frames % frames_per_step] * (
        n_frames % frames_per_step > 0)
    assert max(allocated[1:]) < n_frames * 8 // 4, "a step copied the list of frames waiting (8 bytes each)"


def test_entropy_coding_round_trip(tmp_path, python: str) -> None:
    """fit-entropy then --entropy: identical codes after decoding, fewer bytes than raw."""
    train = tmp_path / "train"
    train.mkdir()
    rng = np.random.default_rng(0)
    clean, _ = sf.read(official_path("input", "test_48k.wav"))
    (train / "sub").mkdir()
    for index, name in enumerate(["0.wav", "1.wav", "sub/2.flac"]):  # any audio folder mode codes, recursively
        sf.write(train / name, np.roll(clean, 4800 * index) + 0.01 * rng.standard_normal(clean.shape), 48000)
    table = tmp_path / "table.entropy"
    fit = codec_cli(python, "fit-entropy", "--model", "vctk_sym", "--cuda", "-1", "-i", str(train), "-o", str(table))
    assert fit.returncode == 0, fit.stderr
    assert "entropy table from 3 files" in fit.stderr
    source = official_path("input", "test_48k.wav")
    raw, packed, decoded = tmp_path / "raw.adc", tmp_path / "ent.adc", tmp_path / "ent.wav"
    encoded = codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "-i", source, "-o", str(raw))
    assert encoded.returncode == 0
    result = codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "--entropy", "--entropy_table",
                       str(table), "-i", source, "-o", str(packed))
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(packed) < os.path.getsize(raw)
    assert "entropy coded yes" in codec_cli(python, "info", str(packed)).stdout
    result = codec_cli(python, "decode", "--cuda", "-1", "--entropy_table", str(table), "-i", str(packed),
                       "-o", str(decoded))
    assert result.returncode == 0, result.stderr
    model = EntropyModel.load(table)
    np.testing.assert_array_equal(read_adc(packed, model)[1], read_adc(raw)[1])
    # Without the table the decoder names the one it needs (a table fitted now would be another).
    _assert_decode_fails(python, tmp_path, packed.read_bytes(), "which is not at")


def test_a_reduced_precision_receiver_from_the_command_line(tmp_path, python: str) -> None:
    """`--precision int8` decodes the same codes close to fp32; a receiver that does not run in the
    engine (here: `--backend torch`) stops with one error line and writes nothing."""
    source = official_path("input", "test_48k.wav")
    packed = tmp_path / "sym.adc"
    assert codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "-i", source,
                     "-o", str(packed)).returncode == 0
    decoded = {}
    for precision in ("fp32", "int8"):
        out = tmp_path / f"{precision}.wav"
        result = codec_cli(python, "decode", "--cuda", "-1", "--precision", precision, "-i", str(packed),
                           "-o", str(out))
        assert result.returncode == 0, result.stderr
        decoded[precision] = sf.read(out)[0]
    assert 25 < snr_db(decoded["fp32"], decoded["int8"]) < 60
    out = tmp_path / "torch.wav"
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--cuda", "-1",
                             "--backend", "torch", "--precision", "int8", "-i", source, "-o", str(out)],
                            cwd=OFFICIAL, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and "use precision fp32" in lines[0] and not out.exists()


@pytest.mark.parametrize("delay", [137, 450])
def test_a_model_with_an_output_delay_gives_files_aligned_with_their_input(python, tmp_path, delay: int) -> None:
    """A model trained with ``output_delay: D`` lags its input by D samples: whole-file coding codes D more
    samples and takes them off the front, in memory, through an .adc file and as the file's bytes arrive."""
    import shutil

    import yaml

    entry = MANIFEST["vctk_sym"]
    decoder_checkpoint = tmp_path / "decoder.pkl"
    shutil.copy(official_path(entry["decoder_checkpoint"]), decoder_checkpoint)
    config = yaml.safe_load(open(os.path.join(os.path.dirname(official_path(entry["decoder_checkpoint"])),
                                              "config.yml")))  # fmt: skip
    (tmp_path / "config.yml").write_text(yaml.safe_dump({**config, "output_delay": delay}))
    delayed = StreamingCodec.from_checkpoints(official_path(entry["encoder_checkpoint"]), str(decoder_checkpoint))
    assert delayed.output_delay == delay
    plain = StreamingCodec(delayed.encoder, delayed.decoder, delayed.sample_rate)
    data, _ = sf.read(official_path("input", "test_48k.wav"), always_2d=True, dtype="float32")
    data = data[:12345]
    codes, y = delayed.code(delayed.streams_from_audio(data))
    assert codes.shape[-1] == -(-(12345 + delay) // 300) and y.shape[-1] == 12345
    _, lagging = plain.code(plain.streams_from_audio(np.pad(data, ((0, delay), (0, 0)))))
    np.testing.assert_array_equal(y.numpy(), lagging[..., delay:].numpy())

    header = encode_to_file(delayed, data, str(tmp_path / "x.adc"))
    assert header.n_samples == 12345 + delay
    _, stored = read_adc(str(tmp_path / "x.adc"))
    np.testing.assert_allclose(decode_codes(delayed, header, stored)[:, 0], y[0, 0].numpy(), atol=1e-5)
    blob = (tmp_path / "x.adc").read_bytes()
    for frames_per_step in (1, 4):
        pieces = [blob[i:i + 11] for i in range(0, len(blob), 11)]
        streamed = np.concatenate(list(decode_stream(delayed, pieces, frames_per_step=frames_per_step)))
        assert streamed.shape == (12345, 1)
        np.testing.assert_allclose(streamed[:, 0], y[0, 0].numpy(), atol=1e-5)

    # `info` gives the audio's length when it finds the decoder's config, and says what it counts when not
    described = codec_cli(python, "info", str(tmp_path / "x.adc"), "--decoder", str(decoder_checkpoint)).stdout
    assert f"(12345 samples; {12345 + delay} coded with the model's output delay of {delay}," in described
    unknown = codec_cli(python, "info", str(tmp_path / "x.adc")).stdout
    assert f"({12345 + delay} samples coded," in unknown and "--decoder CHECKPOINT" in unknown
    missing = codec_cli(python, "info", str(tmp_path / "x.adc"), "--decoder", str(tmp_path / "none.pkl"))
    assert missing.returncode != 0 and missing.stderr.strip() == f"error: decoder checkpoint {tmp_path / 'none.pkl'} " \
        "not found: check --decoder"


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_corrupt_header_is_named_by_the_crc_before_it_is_believed(packed_file: bytes, tmp_path, python) -> None:
    at = packed_file.index(b"vctk_sym")
    data = bytearray(packed_file)
    data[at] ^= 0x01  # "wctk_sym": a model name that decode would otherwise look for
    _assert_decode_fails(python, tmp_path, bytes(data), "CRC mismatch")
    assert "CRC mismatch" in _one_error_line(codec_cli(python, "info", str(tmp_path / "bad.adc")))


def test_files_holding_no_audio_decode_to_empty_wavs(packed_file: bytes, tmp_path, python) -> None:
    import dataclasses

    from utils.bitstream.adc import decode_adc, encode_adc

    header, codes = decode_adc(packed_file)
    for samples, frames in ((0, 0), (150, 1)):
        (tmp_path / f"{samples}.adc").write_bytes(
            encode_adc(dataclasses.replace(header, n_samples=samples), codes[..., :frames]))
        out = tmp_path / f"{samples}.wav"
        result = codec_cli(python, "decode", "--cuda", "-1", "-i", str(tmp_path / f"{samples}.adc"), "-o", str(out))
        assert result.returncode == 0, result.stderr
        assert sf.info(out).frames == samples
        described = codec_cli(python, "info", str(tmp_path / f"{samples}.adc"))
        assert described.returncode == 0, described.stderr
        assert f"({samples} samples, {frames} frames)" in described.stdout
    assert "no audio (file)" in codec_cli(python, "info", str(tmp_path / "0.adc")).stdout
    nameless = tmp_path / "nameless.adc"
    nameless.write_bytes(encode_adc(dataclasses.replace(header, model_name=""), codes))
    line = _one_error_line(codec_cli(python, "decode", "--cuda", "-1", "-i", str(nameless), "-o",
                                     str(tmp_path / "n.wav")))
    assert line == f"error: {nameless} names no model (it was coded with checkpoints outside the registry): " \
                   f"{NAMELESS_FIX}"
    line = _one_error_line(codec_cli(python, "info", str(tmp_path)))
    assert line == f"error: {tmp_path} is a folder: give an .adc file (codec.py decode takes folders)"


def test_a_truncated_entropy_coded_file_fails_info(tmp_path, python) -> None:
    from utils.bitstream.adc import encode_adc, read_adc

    source = official_path("input", "test_48k.wav")
    raw = tmp_path / "raw.adc"
    encoded = codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "-i", source, "-o", str(raw))
    assert encoded.returncode == 0, encoded.stderr
    header, codes = read_adc(raw)
    table = EntropyModel.fit(list(codes), header.codebook_size)
    packed = encode_adc(header, codes, table)
    (tmp_path / "cut.adc").write_bytes(packed[: len(packed) // 2])
    assert "truncated file" in _one_error_line(codec_cli(python, "info", str(tmp_path / "cut.adc")))


def test_outputs_that_name_folders_or_exist_are_refused_before_the_work(tmp_path, python) -> None:
    source = official_path("input", "test_48k.wav")
    line = _one_error_line(codec_cli(python, "encode", "--model", "vctk_sym", "--cuda", "-1", "-i", source,
                                     "-o", f"{tmp_path / 'new'}/"))
    assert line == f"error: cannot write {tmp_path / 'new'}/: it names a folder: give a file name"
    assert os.listdir(tmp_path) == []
    result = subprocess.run([python, os.path.join(REPO, "demoFile.py"), "--model", "vctk_sym", "--cuda", "-1",
                             "-i", source, "-o", str(tmp_path / "out.wav"), "--save_codes",
                             str(tmp_path / "nowhere" / "codes.npy")], cwd=OFFICIAL, capture_output=True, text=True,
                            timeout=300)
    assert _one_error_line(result) == f"error: output folder {tmp_path / 'nowhere'} does not exist: create it first"
    assert os.listdir(tmp_path) == []

    train = tmp_path / "train"
    train.mkdir()
    sf.write(train / "a.wav", sf.read(source)[0][:24000], 48000)
    table = tmp_path / "table.entropy"
    fit = ["fit-entropy", "--model", "vctk_sym", "--cuda", "-1", "-i", str(train)]
    assert codec_cli(python, *fit, "-o", str(table)).returncode == 0
    fitted = table.read_bytes()
    line = _one_error_line(codec_cli(python, *fit, "-o", str(table)))
    assert line == f"error: {table} exists already: pass -f/--force to replace it (files entropy-coded with it then " \
                   "no longer decode), or give another -o"
    assert codec_cli(python, *fit, "-o", str(table), "-f").returncode == 0 and table.read_bytes() == fitted
    assert "it names a folder" in _one_error_line(codec_cli(python, *fit, "-o", str(train)))
    assert _one_error_line(codec_cli(python, *fit, "-o", str(tmp_path / "t2"), "--max_files", "0")) == \
        "error: --max_files 0: give 1 or more"
    assert sorted(os.listdir(tmp_path)) == ["table.entropy", "train"]


def test_the_test_stage_takes_a_models_output_delay_off_too(tmp_path) -> None:
    """codecTest.py's offline pass of a model trained with output_delay: D codes D more samples and
    scores its output from sample D on, aligned with the input (its metrics were of a lagging copy)."""
    import shutil

    import yaml

    from trainer.synthesis import OfflineCodec

    entry = MANIFEST["vctk_sym"]
    shutil.copy(official_path(entry["decoder_checkpoint"]), tmp_path / "decoder.pkl")
    config = yaml.safe_load(open(os.path.join(os.path.dirname(official_path(entry["decoder_checkpoint"])),
                                              "config.yml")))  # fmt: skip
    (tmp_path / "config.yml").write_text(yaml.safe_dump({**config, "output_delay": 137}))
    delayed = OfflineCodec(official_path(entry["encoder_checkpoint"]), str(tmp_path / "decoder.pkl"))
    plain = OfflineCodec(official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]))
    data, _ = sf.read(official_path("input", "test_48k.wav"), always_2d=True, dtype="float32")
    data = data[:12345]
    # A delayed model codes the input, D zeros and zeros to whole hops: the plain pass of that signal.
    lagging = plain.code(np.pad(data, ((0, 137 + -(12345 + 137) % 300), (0, 0))))
    np.testing.assert_array_equal(delayed.code(data), lagging[137:137 + 12345])


def test_a_file_of_more_channels_than_a_wav_holds_is_refused_before_decoding(packed_file: bytes, tmp_path,
                                                                           python) -> None:
    import dataclasses

    from utils.bitstream.adc import decode_adc, encode_adc

    header, codes = decode_adc(packed_file)
    many = dataclasses.replace(header, channels=2000, n_samples=300)  # a valid file: its CRC is right
    data = encode_adc(many, np.zeros((2000, header.n_codebooks, 1), np.int64))
    _assert_decode_fails(python, tmp_path, data, "decodes to 2000 channels, more than a WAV file holds (1024)")


def test_an_entropy_table_of_another_codebook_size_than_the_header_is_refused(tmp_path) -> None:
    import dataclasses

    from utils.bitstream.adc import AdcStreamReader, BitstreamError, StreamHeader, decode_adc, encode_adc

    codes = np.random.default_rng(0).integers(0, 4, (1, 2, 5))
    header = StreamHeader(sample_rate=8000, hop=8, channels=1, n_samples=40, n_codebooks=2, codebook_size=16,
                          model_name="m", decoder_hash=bytes(8))
    table = EntropyModel.fit([codes[0]], 16)
    data = encode_adc(dataclasses.replace(header, codebook_size=4), codes, table)  # written by a broken encoder
    with pytest.raises(BitstreamError, match="codebook size 4 does not match its entropy table's 16"):
        decode_adc(data, table)
    with pytest.raises(BitstreamError, match="codebook size 4 does not match"):
        AdcStreamReader(table).feed(data)
    np.testing.assert_array_equal(decode_adc(encode_adc(header, codes, table), table)[1], codes)


def test_a_huge_file_is_refused_by_its_length_before_it_is_read(packed_file: bytes, tmp_path, python,
                                                                monkeypatch) -> None:
    from utils.bitstream import adc

    big = tmp_path / "big.adc"
    with open(big, "wb") as handle:
        handle.write(packed_file)
        handle.truncate(1 << 30)  # sparse: 1 GiB that reading would have to hold in memory
    read = []
    real_open = open

    class Counting:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

        def fileno(self):
            return self.handle.fileno()

        def read(self, size=-1):
            data = self.handle.read(size)
            read.append(len(data))
            return data

    monkeypatch.setattr("builtins.open", lambda path, mode="r", *a, **k: Counting(real_open(path, mode, *a, **k)))
    with pytest.raises(adc.BitstreamError, match=f"trailing data: expected {len(packed_file)} bytes, got {1 << 30}"):
        adc.open_adc(big)
    assert sum(read) <= adc.MAX_HEADER_BYTES


def test_an_entropy_table_with_bytes_appended_says_so() -> None:
    from utils.bitstream.adc import BitstreamError

    table = EntropyModel.fit([np.arange(16).reshape(2, 8) % 8], 8).to_bytes()
    with pytest.raises(BitstreamError, match="entropy table with trailing data: expected"):
        EntropyModel.from_bytes(table + b"\0")
    with pytest.raises(BitstreamError, match="truncated entropy table: expected"):
        EntropyModel.from_bytes(table[:-1])


def test_entropy_coding_that_would_not_pay_writes_the_raw_payload(tmp_path) -> None:
    codec = full_size_codec()
    data = 0.1 * np.random.default_rng(0).standard_normal((48000, 1))
    raw = encode_to_file(codec, data, str(tmp_path / "raw.adc"))
    codes = read_adc(tmp_path / "raw.adc")[1]
    fitted = EntropyModel.fit(list(codes), 1024)  # this very clip's statistics: smaller
    assert encode_to_file(codec, data, str(tmp_path / "fit.adc"), entropy_model=fitted).entropy_coded
    assert os.path.getsize(tmp_path / "fit.adc") < os.path.getsize(tmp_path / "raw.adc")
    np.testing.assert_array_equal(read_adc(tmp_path / "fit.adc", fitted)[1], codes)
    silence = EntropyModel.fit([np.zeros((8, 5000), np.int64)], 1024)  # every code but 0 near-impossible
    header = encode_to_file(codec, data, str(tmp_path / "other.adc"), entropy_model=silence)
    assert not header.entropy_coded and header == raw
    assert (tmp_path / "other.adc").read_bytes() == (tmp_path / "raw.adc").read_bytes()


def test_the_python_calls_of_the_file_format_check_what_they_are_given(tmp_path) -> None:
    """Integer samples, a 1-D array, a count of codebooks the model lacks: refused before any coding,
    with no file written; the streaming reader names its arguments and decodes entropy-coded bytes."""
    codec = full_size_codec()
    data = 0.1 * np.random.default_rng(0).standard_normal((4800, 1))
    target = tmp_path / "x.adc"
    for samples, message in (((data * 32768).astype(np.int16), r"samples are floats in \[-1, 1\], got int16"),
                             (data[:, 0], r"a NumPy array \(samples, channels\), got shape \(4800,\)")):
        with pytest.raises(CodecError, match=message):
            encode_to_file(codec, samples, str(target))
    for bad in (0, -1, 9, 4.0, True):
        with pytest.raises(CodecError, match=rf"n_codebooks {bad!r}: this model has 1..8"):
            encode_to_file(codec, data, str(target), n_codebooks=bad)
    assert not target.exists()

    encode_to_file(codec, data, str(target))
    codes = read_adc(target)[1]
    fitted = EntropyModel.fit(list(codes), 1024)
    assert encode_to_file(codec, data, str(tmp_path / "e.adc"), entropy_model=fitted).entropy_coded
    blob = (tmp_path / "e.adc").read_bytes()
    with pytest.raises(BitstreamError, match="pass the entropy model it was written with"):
        list(decode_stream(codec, [blob]))
    streamed = np.concatenate(list(decode_stream(codec, [blob[:10], blob[10:]], entropy_model=fitted)))
    np.testing.assert_array_equal(streamed, np.concatenate(list(decode_stream(codec, [target.read_bytes()]))))
    with pytest.raises(CodecError, match=r"takes an iterable of byte pieces, got the bytes themselves: pass \[data\]"):
        next(decode_stream(codec, blob))
    for bad in (0, 1.5, True):
        with pytest.raises(CodecError, match=rf"frames_per_step {bad!r}: give a whole number of frames, 1 or more"):
            next(decode_stream(codec, [blob], frames_per_step=bad))


def test_a_table_for_more_codes_than_16_bits_hold_names_the_real_limit() -> None:
    codes = [np.zeros((1, 4), np.int64)]
    with pytest.raises(ValueError, match=r"exceeds 2\*\*precision_bits = 4096: raise precision_bits \(at most 16\)"):
        EntropyModel.fit(codes, 5000, precision_bits=12)
    with pytest.raises(ValueError, match=r"tables of 16 bits hold at most 65536 codes: store such codes raw"):
        EntropyModel.fit(codes, 1 << 17)


def test_the_test_stages_codec_refuses_integer_samples() -> None:
    from trainer.synthesis import OfflineCodec

    entry = MANIFEST["vctk_sym"]
    codec = OfflineCodec(official_path(entry["encoder_checkpoint"]), official_path(entry["decoder_checkpoint"]))
    audio = 0.1 * np.random.default_rng(0).standard_normal((600, 1))
    with pytest.raises(CodecError, match=r"samples are floats in \[-1, 1\], got int16: scale integer ones"):
        codec.code((audio * 32768).astype(np.int16))
    assert codec.code(audio).shape == (600, 1)


def test_files_coded_with_checkpoints_outside_the_registry_name_no_model(packed_file: bytes, tmp_path, python) -> None:
    """--encoder/--decoder files name no model (they had named 'custom', which decode then looked up);
    such files, old ones included, decode with their checkpoints, and every message gives that fix."""
    import dataclasses

    from utils.bitstream.adc import decode_adc, encode_adc

    sym, v1 = MANIFEST["vctk_sym"], MANIFEST["vctk_v1"]
    checkpoints = ("--encoder", sym["encoder_checkpoint"], "--decoder", sym["decoder_checkpoint"])
    coded = tmp_path / "c.adc"
    result = codec_cli(python, "encode", *checkpoints, "--cuda", "-1", "-i", official_path("input", "test_48k.wav"),
                       "-o", str(coded))
    assert result.returncode == 0, result.stderr
    header, codes = decode_adc(coded.read_bytes())
    assert header.model_name == ""
    info = codec_cli(python, "info", str(coded)).stdout
    assert "model         (none: decode with --encoder and --decoder) (decoder " in info
    old = tmp_path / "old.adc"
    old.write_bytes(encode_adc(dataclasses.replace(header, model_name="custom"), codes))
    reference = tmp_path / "reference.wav"
    assert codec_cli(python, "decode", "--cuda", "-1", "-i", str(tmp_path / "good.adc"), "-o", str(reference)) \
        .returncode == 0
    for path in (coded, old):
        line = _one_error_line(codec_cli(python, "decode", "--cuda", "-1", "-i", str(path), "-o",
                                         str(tmp_path / "x.wav")))
        assert line == f"error: {path} names no model (it was coded with checkpoints outside the registry): " \
                       f"{NAMELESS_FIX}"
        other = ("--encoder", v1["encoder_checkpoint"], "--decoder", v1["decoder_checkpoint"])
        line = _one_error_line(codec_cli(python, "decode", *other, "--cuda", "-1", "-i", str(path), "-o",
                                         str(tmp_path / "x.wav")))
        assert "encoded with checkpoints outside the model registry" in line
        assert line.endswith("decode with the encoder and decoder checkpoints it was coded with (codec.py decode "
                             "--encoder/--decoder)")
        out = tmp_path / f"{path.stem}.wav"
        decoded = codec_cli(python, "decode", *checkpoints, "--cuda", "-1", "-i", str(path), "-o", str(out))
        assert decoded.returncode == 0, decoded.stderr
        assert np.array_equal(sf.read(out)[0], sf.read(reference)[0])
    both = codec_cli(python, "decode", *checkpoints, "--model", "vctk_sym", "--cuda", "-1", "-i", str(coded), "-o",
                     str(tmp_path / "y.wav"))
    assert _one_error_line(both) == \
        "error: --model vctk_sym and --encoder/--decoder both name the model: give one of them"
    assert not (tmp_path / "x.wav").exists() and not (tmp_path / "y.wav").exists()


def test_encode_refuses_an_audio_name_and_the_dash(tmp_path, python) -> None:
    source = official_path("input", "test_48k.wav")
    encode = ("encode", "--model", "vctk_sym", "--cuda", "-1", "-i", source, "-o")
    assert _one_error_line(codec_cli(python, *encode, str(tmp_path / "x.wav"))) == \
        f"error: -o {tmp_path / 'x.wav'}: encode writes .adc files, not audio: give an .adc output name"
    assert _one_error_line(codec_cli(python, *encode, "-")) == \
        "error: -o -: standard input and output are not read or written: give a file path"
    assert _one_error_line(codec_cli(python, "decode", "--cuda", "-1", "-i", "-", "-o", str(tmp_path / "y.wav"))) == \
        "error: -i -: standard input and output are not read or written: give a file path"
    assert os.listdir(tmp_path) == [] and not os.path.exists(os.path.join(OFFICIAL, "-"))


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc, a folder that takes no files")
def test_an_output_folder_that_takes_no_files_stops_before_the_work(tmp_path, python) -> None:
    """Checked first: before a model is looked up (here one that does not exist) or a file read (here junk)."""
    source = official_path("input", "test_48k.wav")
    result = codec_cli(python, "encode", "--model", "nosuch", "--cuda", "-1", "-i", source, "-o", "/proc/out.adc")
    assert _one_error_line(result).startswith("error: cannot write /proc/out.adc (")
    (tmp_path / "junk.adc").write_bytes(b"junk")
    result = codec_cli(python, "decode", "--cuda", "-1", "-i", str(tmp_path / "junk.adc"), "-o", "/proc/out.wav")
    assert _one_error_line(result).startswith("error: cannot write /proc/out.wav (")


def test_the_python_api_decodes_files_loading_each_model_once(packed_file: bytes, tmp_path, python) -> None:
    """FileDecoder, what `codec.py decode` runs per file: the CLI's audio, each model loaded on the first
    file that names it, and a file naming no model refused in the CLI's words."""
    import dataclasses

    from utils.bitstream.adc import decode_adc, encode_adc
    from utils.bitstream.codec_file import FileDecoder

    (tmp_path / "a.adc").write_bytes(packed_file)
    (tmp_path / "b.adc").write_bytes(packed_file)
    header, codes = decode_adc(packed_file)
    (tmp_path / "none.adc").write_bytes(encode_adc(dataclasses.replace(header, model_name=""), codes))
    loaded = []

    def load(name: str) -> StreamingCodec:
        loaded.append(name)
        return StreamingCodec.from_name(name, root=OFFICIAL, device="cpu")

    decoder = FileDecoder(load)
    first, rate = decoder.decode(tmp_path / "a.adc")
    second, _ = decoder.decode(str(tmp_path / "b.adc"))
    assert loaded == ["vctk_sym"] and rate == 48000
    result = codec_cli(python, "decode", "--cuda", "-1", "-i", str(tmp_path / "a.adc"), "-o", str(tmp_path / "a.wav"))
    assert result.returncode == 0, result.stderr
    np.testing.assert_array_equal(second, first)
    from utils.audio import write_audio

    write_audio(str(tmp_path / "api.wav"), first, rate)
    np.testing.assert_array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "api.wav")[0])
    with pytest.raises(CodecError, match=r"none.adc names no model \(it was coded with checkpoints outside.*; from "
                                         r"Python, FileDecoder\(load_model, model=KEY\) with a load_model\(KEY\) "
                                         r"that loads them\)$"):
        decoder.decode(tmp_path / "none.adc")
    nameless, _ = FileDecoder(load, model="vctk_sym").decode(tmp_path / "none.adc")  # what the message says to do
    np.testing.assert_array_equal(nameless, first)


def test_a_file_is_decoded_a_block_at_a_time_as_it_is_written(tmp_path) -> None:
    """FileDecoder.decode_blocks, what `codec.py decode` writes from: its pieces join to `decode`'s audio,
    and the first comes before the rest of the file is decoded, so a long file is never whole in memory."""
    from utils.audiodec import BLOCK_FRAMES
    from utils.bitstream.codec_file import FileDecoder

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL, device="cpu")
    data = 0.1 * np.random.default_rng(5).standard_normal((3 * BLOCK_FRAMES * codec.hop_length + 123, 2))
    encode_to_file(codec, data.astype(np.float32), str(tmp_path / "long.adc"))
    steps: list[int] = []
    decode_codes_step = codec._decode_codes
    codec._decode_codes = lambda codes: steps.append(codes.shape[-1]) or decode_codes_step(codes)
    decoder = FileDecoder(lambda name: codec)
    whole, rate = decoder.decode(tmp_path / "long.adc")
    warm_up, *blocks = steps  # the warmed-up state's decoding, then the file's blocks
    assert blocks == [BLOCK_FRAMES] * 3 + [1]
    steps.clear()
    pieces, piece_rate, channels = decoder.decode_blocks(tmp_path / "long.adc")
    assert steps == []
    first = next(pieces)
    assert steps == [warm_up, BLOCK_FRAMES]  # one block decoded for the first piece
    rest = list(pieces)
    assert steps == [warm_up, *blocks] and (piece_rate, channels) == (rate, 2)
    np.testing.assert_array_equal(np.concatenate([first, *rest]), whole)
    assert whole.shape == data.shape


@pytest.mark.parametrize("line", [["--list-models"], ["encode", "--list-models"], ["decode", "--list-models"],
                                  ["fit-entropy", "--list-models", "--root", "."]])
def test_list_models_needs_no_input_or_output(python: str, line: list[str]) -> None:
    """Each command's --help offers --list-models: it lists without the -i/-o a command requires."""
    result = codec_cli(python, *line)
    assert result.returncode == 0, result.stderr
    installed = [row.split()[0] for row in result.stdout.splitlines() if "installed in" in row]
    assert "vctk_v1" in installed  # the official vectors' folder (the cwd) holds it


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_a_file_at_the_codecs_rate_is_read_in_float32_and_codes_as_in_float64(tmp_path, subtype: str) -> None:
    """The coders read a file at the codec's rate in float32 (half the memory of a long file): the codes
    are those of the float64 samples, which the codec rounds to float32 anyway."""
    from utils.audio import read_audio
    from utils.cli import read_input_for

    codec = StreamingCodec.from_name("vctk_sym", root=OFFICIAL)
    signal = 0.3 * np.random.default_rng(5).standard_normal((48000 // 2 + 123, 2))
    sf.write(tmp_path / "in.wav", signal, 48000, subtype)
    single = read_input_for(codec, str(tmp_path / "in.wav"), allow_resample=False)
    double, _ = read_audio(tmp_path / "in.wav")
    assert single.dtype == np.float32 and double.dtype == np.float64
    codes = codec.encode_signal(codec.streams_from_audio(single))
    assert torch.equal(codes, codec.encode_signal(codec.streams_from_audio(double)))
    padded = codec._pad_whole_signal(codec.streams_from_audio(double))  # one padded whole, as before
    codec.reset(2)
    assert torch.equal(codes, codec.encode(padded))
