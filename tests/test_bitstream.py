"""The .adc container: round trips, sizes, corruption and truncation, streaming reads."""

import dataclasses
import os
import re
import types
import zlib

import numpy as np
import pytest

from utils.bitstream.adc import (
    CRC_BYTES,
    FIXED_HEADER_BYTES,
    MAX_HEADER_BYTES,
    AdcStreamReader,
    BitstreamError,
    StreamHeader,
    decode_adc,
    decode_header,
    encode_adc,
    read_adc,
    short_hash,
    verify_adc,
    write_adc,
)
from utils.bitstream.codec_file import decode_codes
from utils.bitstream.entropy import EntropyModel
from utils.errors import CodecError


def make_stream(channels=1, n_codebooks=8, codebook_size=1024, n_samples=4500, hop=300, seed=0, name="vctk_v1"):
    header = StreamHeader(
        sample_rate=48000, hop=hop, channels=channels, n_samples=n_samples, n_codebooks=n_codebooks,
        codebook_size=codebook_size, model_name=name, decoder_hash=short_hash(b"decoder weights"),
    )
    codes = np.random.default_rng(seed).integers(0, codebook_size, (channels, n_codebooks, header.n_frames))
    return header, codes


def with_crc(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(CRC_BYTES, "big")


@pytest.mark.parametrize("codebook_size", [64, 1024, 4096])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n_codebooks", range(1, 9))
def test_round_trip(n_codebooks, channels, codebook_size):
    header, codes = make_stream(channels, n_codebooks, codebook_size, n_samples=3001, seed=n_codebooks)
    data = encode_adc(header, codes)
    decoded_header, decoded = decode_adc(data)
    assert decoded_header == header
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, codes)
    assert len(data) == FIXED_HEADER_BYTES + len("vctk_v1") + header.raw_payload_bytes + CRC_BYTES


@pytest.mark.parametrize("codebook_size", [2, 3, 1000, 2**20 + 1])
def test_round_trip_odd_codebook_sizes(codebook_size):
    header, codes = make_stream(2, 3, codebook_size, n_samples=2000)
    assert header.bits_per_code == max(1, (codebook_size - 1).bit_length())
    np.testing.assert_array_equal(decode_adc(encode_adc(header, codes))[1], codes)


def test_file_round_trip_and_no_temp_files(tmp_path):
    header, codes = make_stream(2, 4)
    path = tmp_path / "speech.adc"
    written = write_adc(path, header, codes)
    assert written == header
    assert os.listdir(tmp_path) == ["speech.adc"]
    decoded_header, decoded = read_adc(path)
    assert decoded_header == header
    np.testing.assert_array_equal(decoded, codes)


def test_ten_seconds_default_model_is_exactly_16000_payload_bytes():
    header, codes = make_stream(n_samples=480000)
    assert header.n_frames == 1600
    assert header.payload_bits_per_frame == 80
    assert header.bitrate == 12800
    data = encode_adc(header, codes)
    header_bytes = FIXED_HEADER_BYTES + len(header.model_name)
    assert header.raw_payload_bytes == 16000
    assert len(data) == header_bytes + 16000 + CRC_BYTES
    assert header_bytes < MAX_HEADER_BYTES


def test_longest_header_stays_under_128_bytes():
    header, codes = make_stream(name="m" * 64)
    data = encode_adc(header, codes)
    assert len(data) - header.raw_payload_bytes - CRC_BYTES == FIXED_HEADER_BYTES + 64 < MAX_HEADER_BYTES
    with pytest.raises(BitstreamError, match="at most 64 fit"):
        encode_adc(dataclasses.replace(header, model_name="m" * 65), codes)
    unicode_name = "é" * 32
    assert decode_header(encode_adc(dataclasses.replace(header, model_name=unicode_name), codes)).model_name == (
        unicode_name
    )


def test_zero_samples():
    header, codes = make_stream(n_samples=0)
    assert codes.shape == (1, 8, 0)
    decoded_header, decoded = decode_adc(encode_adc(header, codes))
    assert decoded_header.n_frames == 0 and decoded.shape == (1, 8, 0)


def test_bad_codes_are_refused_before_writing(tmp_path):
    header, codes = make_stream()
    with pytest.raises(BitstreamError, match="shape"):
        write_adc(tmp_path / "a.adc", header, codes[:, :, :-1])
    with pytest.raises(BitstreamError, match=r"lie in \[0, 1024\)"):
        write_adc(tmp_path / "a.adc", header, codes + 1024)
    with pytest.raises(BitstreamError, match="out of range"):
        write_adc(tmp_path / "a.adc", dataclasses.replace(header, hop=0), codes)
    for value, kind in ((4500.0, "float"), (True, "bool"), ("4500", "str")):
        with pytest.raises(BitstreamError, match=rf"n_samples={value!r} is a {kind}, not an integer: give an int"):
            write_adc(tmp_path / "a.adc", dataclasses.replace(header, n_samples=value), codes)
    with pytest.raises(BitstreamError, match="does not exist"):
        write_adc(tmp_path / "missing" / "a.adc", header, codes)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    header, codes = make_stream()
    path = tmp_path / "a.adc"
    path.write_bytes(b"old")

    def failing_replace(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CodecError, match=r"^cannot write .*a\.adc \(disk full\): give another output path$"):
        write_adc(path, header, codes)
    assert os.listdir(tmp_path) == ["a.adc"]
    assert path.read_bytes() == b"old"


def test_read_missing_file(tmp_path):
    with pytest.raises(BitstreamError, match="does not exist"):
        read_adc(tmp_path / "nothing.adc")


def test_read_a_fifo_says_it_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.adc")
    with pytest.raises(BitstreamError, match=r"pipe\.adc is not a regular file \(a pipe or a device\?\): give an "
                                             r"\.adc file's path$"):
        read_adc(tmp_path / "pipe.adc")


@pytest.mark.parametrize("field, change, words", [
    ("sample_rate", 16000, "sample rate 16000, this model's is 48000"),
    ("hop", 320, "hop 320, this model's is 300"),
    ("codebook_size", 2048, "codebook size 2048, this model's is 1024"),
    ("n_codebooks", 9, "9 codebooks, this model has 8"),
])
def test_a_file_of_another_layout_names_the_field_and_both_values(field: str, change: int, words: str):
    """A file whose decoder fingerprint matches (forged, or unset) but whose layout does not."""
    header, codes = make_stream(name="demo48k")
    codec = types.SimpleNamespace(decoder_hash=lambda: header.decoder_hash, sample_rate=48000, hop_length=300,
                                  codebook_size=1024, n_codebooks=8)
    with pytest.raises(CodecError) as error:
        decode_codes(codec, dataclasses.replace(header, **{field: change}), codes)
    assert str(error.value) == f"the file was coded by model 'demo48k' with {words}: decode it with the model it names"


def test_read_error_names_the_file(tmp_path):
    path = tmp_path / "x.adc"
    path.write_bytes(b"RIFF....WAVE")
    with pytest.raises(BitstreamError, match=r"x\.adc: not an \.adc file \(bad magic\)"):
        read_adc(path)


def test_wrong_magic():
    header, codes = make_stream()
    data = encode_adc(header, codes)
    with pytest.raises(BitstreamError, match=r"not an \.adc file \(bad magic\)"):
        decode_adc(b"XDCB" + data[4:])


def test_future_version_asks_for_an_upgrade():
    header, codes = make_stream()
    data = encode_adc(header, codes)
    future = with_crc(data[:4] + bytes([9]) + data[5:-CRC_BYTES])
    with pytest.raises(BitstreamError, match=r"format version 9 is newer than this toolkit supports \(1\); upgrade"):
        decode_adc(future)
    with pytest.raises(BitstreamError, match="format version 9"):
        AdcStreamReader().feed(future[:5])


def test_unknown_flags():
    header, codes = make_stream()
    data = encode_adc(header, codes)
    with pytest.raises(BitstreamError, match="unknown header flags 0x80"):
        decode_adc(with_crc(data[:5] + bytes([0x80]) + data[6:-CRC_BYTES]))


def test_cannot_write_another_version():
    header, codes = make_stream()
    with pytest.raises(BitstreamError, match="cannot write format version 2"):
        encode_adc(dataclasses.replace(header, version=2), codes)


def test_truncated_file_at_several_cut_points():
    header, codes = make_stream(n_samples=3000)
    data = encode_adc(header, codes)
    header_bytes = FIXED_HEADER_BYTES + len(header.model_name)
    for cut in [0, 2, 4, 20, FIXED_HEADER_BYTES, header_bytes, header_bytes + 1, len(data) // 2, len(data) - 4,
                len(data) - 1]:
        with pytest.raises(BitstreamError, match=rf"truncated file: expected (at least )?\d+ bytes, got {cut}"):
            decode_adc(data[:cut])
    with pytest.raises(BitstreamError, match=f"truncated file: expected {len(data)} bytes, got {len(data) - 1}"):
        decode_adc(data[:-1])


def test_trailing_data():
    header, codes = make_stream()
    data = encode_adc(header, codes)
    with pytest.raises(BitstreamError, match="trailing data"):
        decode_adc(data + b"\0")
    with pytest.raises(BitstreamError, match="trailing data"):
        AdcStreamReader().feed(data + b"\0")


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
def test_every_single_byte_flip_is_detected(mask):
    header, codes = make_stream(channels=2, n_codebooks=3, codebook_size=1000, n_samples=1500, name="tiny")
    data = encode_adc(header, codes)
    header_bytes = FIXED_HEADER_BYTES + len("tiny")
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= mask
        with pytest.raises(BitstreamError) as caught:
            decode_adc(bytes(corrupt))
        if position >= header_bytes:
            assert "CRC mismatch: the file is corrupt" in str(caught.value)
        reader = AdcStreamReader()
        with pytest.raises(BitstreamError):
            reader.feed(bytes(corrupt))
            reader.close()


def test_corrupt_payload_with_valid_crc_is_still_refused():
    header, codes = make_stream(n_codebooks=1, codebook_size=1000, n_samples=600)
    data = encode_adc(header, codes)
    header_bytes = len(data) - header.raw_payload_bytes - CRC_BYTES
    all_ones = data[:header_bytes] + b"\xff" * (header.raw_payload_bytes - 1) + b"\xf0"
    with pytest.raises(BitstreamError, match="not below codebook size 1000"):
        decode_adc(with_crc(all_ones))
    padded = bytearray(data[:-CRC_BYTES])
    padded[-1] |= 0x01  # 2 frames x 10 bits = 20 bits: the last 4 bits are padding
    with pytest.raises(BitstreamError, match="nonzero padding bits"):
        decode_adc(with_crc(bytes(padded)))


@pytest.mark.parametrize("piece_size", range(1, 8))
def test_stream_reader_yields_frames_in_order(piece_size):
    header, codes = make_stream(channels=2, n_codebooks=3, n_samples=6100, seed=piece_size)
    data = encode_adc(header, codes)
    reader = AdcStreamReader()
    frames = []
    for start in range(0, len(data), piece_size):
        frames += reader.feed(data[start : start + piece_size])
    assert reader.close() == header
    assert len(frames) == header.n_frames
    assert all(frame.shape == (2, 3) for frame in frames)
    np.testing.assert_array_equal(np.stack(frames, axis=-1), codes)


def test_stream_reader_yields_each_frame_as_soon_as_its_bits_arrive():
    header, codes = make_stream(channels=1, n_codebooks=3, n_samples=3000)  # 30-bit frames, not byte aligned
    data = encode_adc(header, codes)
    header_bytes = FIXED_HEADER_BYTES + len(header.model_name)
    reader = AdcStreamReader()
    for size in range(1, len(data) - CRC_BYTES + 1):
        frames = reader.feed(data[size - 1 : size])
        payload_bits = max(0, size - header_bytes) * 8
        assert reader.frames_read == min(header.n_frames, payload_bits // header.payload_bits_per_frame)
        for frame in frames:
            np.testing.assert_array_equal(frame, codes[:, :, reader.frames_read - len(frames) + frames.index(frame)])
    reader.feed(data[-CRC_BYTES:])
    reader.close()


def test_stream_reader_truncated_and_corrupt():
    header, codes = make_stream()
    data = encode_adc(header, codes)
    for cut in [0, 10, 60, len(data) - 1]:
        reader = AdcStreamReader()
        reader.feed(data[:cut])
        with pytest.raises(BitstreamError, match="truncated stream: expected"):
            reader.close()
    reader = AdcStreamReader()
    reader.feed(data[:-1])
    with pytest.raises(BitstreamError, match="CRC mismatch"):
        reader.feed(bytes([data[-1] ^ 1]))
    with pytest.raises(BitstreamError, match="truncated stream"):
        reader.close()
    with pytest.raises(BitstreamError, match="after close"):
        reader.feed(b"")


def test_decoder_hash_check():
    header, _ = make_stream()
    header.check_decoder(short_hash(b"decoder weights"))
    with pytest.raises(BitstreamError, match="decode with model 'vctk_v1'"):
        header.check_decoder(short_hash(b"other weights"))
    with pytest.raises(BitstreamError, match=r"outside the model registry .*: decode with the encoder and decoder "
                                             r"checkpoints it was coded with \(codec.py decode --encoder/--decoder\)$"):
        dataclasses.replace(header, model_name="").check_decoder(short_hash(b"other weights"))


def test_a_path_or_other_non_bytes_given_for_the_bytes_says_what_to_pass(tmp_path):
    header, codes = make_stream()
    path = tmp_path / "a.adc"
    data = encode_adc(header, codes)
    path.write_bytes(data)
    for given in (str(path), path):
        for function, call in (("decode_adc", decode_adc), ("verify_adc", verify_adc),
                               ("decode_header", decode_header), ("feed()", AdcStreamReader().feed)):
            with pytest.raises(BitstreamError, match=rf"^{re.escape(function)} takes an .adc file's bytes, got the "
                                                     rf"path '.*a.adc': read the file with read_adc\(path\), or pass "
                                                     r"Path\(path\).read_bytes\(\)$"):
                call(given)
    for given, kind in ((len(data), "int"), (None, "NoneType"), ([1, 2], "list")):
        with pytest.raises(BitstreamError, match=rf"decode_adc takes an .adc file's bytes, got a {kind}: pass bytes"):
            decode_adc(given)
    for buffer in (bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        assert np.array_equal(decode_adc(buffer)[1], codes)


def fitted_model(codebook_size=1024, n_codebooks=8):
    training = np.random.default_rng(1).geometric(0.05, (4, n_codebooks, 2000)) % codebook_size
    return EntropyModel.fit(training, codebook_size)


def test_entropy_coded_file_round_trip(tmp_path):
    model = fitted_model()
    header, _ = make_stream(channels=2)
    codes = np.random.default_rng(5).geometric(0.05, (2, 8, header.n_frames)) % 1024
    written = write_adc(tmp_path / "a.adc", header, codes, entropy_model=model)
    assert written.entropy_coded and written.entropy_hash == model.table_hash
    decoded_header, decoded = read_adc(tmp_path / "a.adc", entropy_model=model)
    assert decoded_header == written
    np.testing.assert_array_equal(decoded, codes)
    assert os.path.getsize(tmp_path / "a.adc") < len(encode_adc(header, codes))

    data = (tmp_path / "a.adc").read_bytes()
    reader = AdcStreamReader(entropy_model=model)
    frames = []
    for start in range(0, len(data), 5):
        frames += reader.feed(data[start : start + 5])
    reader.close()
    np.testing.assert_array_equal(np.stack(frames, axis=-1), codes)


def test_entropy_coded_file_needs_the_right_table():
    model = fitted_model()
    header, codes = make_stream()
    data = encode_adc(header, codes, entropy_model=model)
    with pytest.raises(BitstreamError, match="entropy-coded .*pass the entropy model"):
        decode_adc(data)
    other = fitted_model(n_codebooks=9)
    with pytest.raises(BitstreamError, match="entropy table mismatch"):
        decode_adc(data, entropy_model=other)
    with pytest.raises(BitstreamError, match="entropy table mismatch"):
        AdcStreamReader(entropy_model=other).feed(data)
    raw_header, raw_codes = decode_adc(encode_adc(header, codes), entropy_model=model)
    assert not raw_header.entropy_coded
    np.testing.assert_array_equal(raw_codes, codes)


def test_every_byte_flip_in_entropy_coded_file_is_detected():
    model = fitted_model(codebook_size=64, n_codebooks=2)
    header, codes = make_stream(n_codebooks=2, codebook_size=64, n_samples=900)
    data = encode_adc(header, codes, entropy_model=model)
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0x10
        with pytest.raises(BitstreamError):
            decode_adc(bytes(corrupt), entropy_model=model)


@pytest.mark.parametrize("codebook_size", [1000, 1024])
def test_a_code_equal_to_the_codebook_size_is_not_written(tmp_path, codebook_size):
    """The first code out of range is refused before writing (at 1024 it would pack as 0)."""
    header, codes = make_stream(codebook_size=codebook_size)
    codes[0, 3, 2] = codebook_size - 1
    np.testing.assert_array_equal(decode_adc(encode_adc(header, codes))[1], codes)
    codes[0, 3, 2] = codebook_size
    message = rf"^codes must lie in \[0, {codebook_size}\), got \[\d+, {codebook_size}\]"
    with pytest.raises(BitstreamError, match=message):
        write_adc(tmp_path / "a.adc", header, codes)
    assert os.listdir(tmp_path) == []


def test_a_stored_code_equal_to_the_codebook_size_is_corrupt():
    """1000 codes take 10 bits: a stored 1000 (valid CRC) is refused, whole and streamed."""
    from utils.bitstream.bits import pack_codes

    header, codes = make_stream(n_codebooks=1, codebook_size=1000, n_samples=600)
    data = encode_adc(header, codes)
    header_bytes = len(data) - header.raw_payload_bytes - CRC_BYTES
    codes[0, 0, 1] = 1000
    stored = with_crc(data[:header_bytes] + pack_codes(codes.transpose(2, 0, 1), header.bits_per_code))
    message = r"^code 1000 is not below codebook size 1000: the file is corrupt$"
    with pytest.raises(BitstreamError, match=message):
        decode_adc(stored)
    with pytest.raises(BitstreamError, match=message):
        AdcStreamReader().feed(stored)


def test_the_next_format_version_asks_for_an_upgrade():
    from utils.bitstream.adc import FORMAT_VERSION

    header, codes = make_stream()
    data = encode_adc(header, codes)
    version = FORMAT_VERSION + 1
    newer = with_crc(data[:4] + bytes([version]) + data[5:-CRC_BYTES])
    message = rf"^format version {version} is newer than this toolkit supports \({FORMAT_VERSION}\); upgrade$"
    with pytest.raises(BitstreamError, match=message):
        decode_adc(newer)
    with pytest.raises(BitstreamError, match=message):
        AdcStreamReader().feed(newer[:5])


@pytest.mark.parametrize("bits", [1, 7, 10, 32])
def test_codes_packed_in_pieces_are_the_bits_written_one_by_one(bits: int, monkeypatch) -> None:
    """pack_codes and unpack_codes work a piece of codes at a time (a long file's bit matrix would
    take gigabytes): the bytes and codes are those of writing each code's bits in turn, MSB first,
    across piece boundaries and from any bit offset."""
    from utils.bitstream import bits as packing

    monkeypatch.setattr(packing, "PIECE", 16)  # many pieces on a short array
    values = np.random.default_rng(bits).integers(0, 2**bits, 100, dtype=np.int64)
    stream = "".join(format(int(value), f"0{bits}b") for value in values)
    stream += "0" * (-len(stream) % 8)
    expected = bytes(int(stream[at : at + 8], 2) for at in range(0, len(stream), 8))
    assert packing.pack_codes(values, bits) == expected
    np.testing.assert_array_equal(packing.unpack_codes(expected, 100, bits), values)
    for offset in (1, 5, 13):  # behind `offset` bits of something else
        prefix = "1" * offset + stream[: 100 * bits]
        prefix += "0" * (-len(prefix) % 8)
        shifted = bytes(int(prefix[at : at + 8], 2) for at in range(0, len(prefix), 8))
        np.testing.assert_array_equal(packing.unpack_codes(bytearray(shifted), 100, bits, offset), values)
    assert packing.pack_codes(values[:0], bits) == b"" and packing.unpack_codes(b"", 0, bits).shape == (0,)


def test_packing_a_long_file_takes_memory_of_the_codes_not_of_their_bits() -> None:
    """An hour of 8 x 10-bit codes is 4.6 million codes: (un)packed whole, their bits as int64 took
    368 MB. Python's allocations (tracemalloc) while (un)packing 2**20 codes stay within a few times
    the codes' own 8 MB."""
    import tracemalloc

    from utils.bitstream.bits import pack_codes, unpack_codes

    values = np.random.default_rng(0).integers(0, 1024, 1 << 20, dtype=np.int64)
    tracemalloc.start()
    try:
        packed = pack_codes(values, 10)
        pack_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        codes = unpack_codes(packed, len(values), 10)
        unpack_peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(codes, values)
    assert pack_peak < 3 * len(packed) + 16e6 and unpack_peak < 2 * values.nbytes, (pack_peak, unpack_peak)
