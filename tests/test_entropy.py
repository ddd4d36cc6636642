"""The range coder: lossless, compact on skewed codes, deterministic, and safe on corrupt input."""

import hashlib
import time
import zlib

import numpy as np
import pytest

from utils.bitstream.adc import BitstreamError
from utils.bitstream.entropy import EntropyModel, quantize_frequencies


def skewed_codes(shape, codebook_size, seed, p=0.05):
    return np.random.default_rng(seed).geometric(p, shape) % codebook_size


def slow_decode(data: bytes, frequencies: np.ndarray, precision_bits: int, table_order: list[int]) -> list[int]:
    """An independent decoder: the whole payload as one big integer, nested intervals searched linearly.

    It shares no code with utils.bitstream.entropy and does no byte-wise carry handling: if the fast encoder
    propagated a carry wrongly, the number would fall outside the interval it should lie in.
    """
    number = int.from_bytes(data, "big")
    low, width, shifts = 0, 2**32 - 1, 0
    symbols = []
    for table in table_order:
        scale = 256 ** (len(data) - 4 - shifts)
        step = width >> precision_bits
        row = frequencies[table].tolist()
        starts = [low + step * sum(row[:symbol]) * scale for symbol in range(len(row) + 1)]
        matches = [symbol for symbol in range(len(row)) if starts[symbol] <= number < starts[symbol + 1]]
        assert len(matches) == 1, "the payload lies outside every symbol's interval"
        symbol = matches[0]
        symbols.append(symbol)
        low, width = starts[symbol], step * row[symbol]
        while width < 2**24:
            width <<= 8
            shifts += 1
    assert shifts == len(data) - 4, "the payload length does not match the renormalizations"
    return symbols


@pytest.mark.parametrize("codebook_size", [64, 1024, 4096])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("n_codebooks", range(1, 9))
def test_round_trip(n_codebooks, channels, codebook_size):
    model = EntropyModel.fit(skewed_codes((3, 8, 400), codebook_size, seed=0), codebook_size)
    codes = skewed_codes((channels, n_codebooks, 77), codebook_size, seed=n_codebooks)
    codes[0, 0, :3] = codebook_size - 1  # codes never seen in training still code (add-one smoothing)
    data = model.encode(codes)
    decoded = model.decode(data, channels, n_codebooks, 77)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, codes)


def test_empty_stream():
    model = EntropyModel.fit(skewed_codes((1, 2, 50), 64, seed=0), 64)
    data = model.encode(np.zeros((1, 2, 0), dtype=np.int64))
    assert model.decode(data, 1, 2, 0).shape == (1, 2, 0)


def test_slow_independent_decoder_agrees_on_random_streams():
    model = EntropyModel.fit(skewed_codes((2, 4, 300), 64, seed=3, p=0.3), 64)
    for seed in range(20):
        codes = skewed_codes((1, 4, 30), 64, seed=seed, p=0.3)
        data = model.encode(codes)
        order = [codebook for _ in range(30) for codebook in range(4)]
        assert slow_decode(data, model.frequencies, 16, order) == codes.transpose(2, 0, 1).reshape(-1).tolist()


def test_known_answer():
    model = EntropyModel(np.array([[8, 4, 2, 1, 1], [1, 1, 1, 6, 7]]), precision_bits=4)
    codes = np.array([[[0, 0, 1, 2, 3, 4, 0, 1, 0, 0, 4, 4], [4, 3, 3, 4, 0, 1, 2, 4, 3, 3, 4, 4]]])
    data = model.encode(codes)
    # Checked with slow_decode below; the ideal cost is 51.6 bits: 6 renormalization bytes + 4 flushed bytes.
    assert data.hex() == "53d8d3de2c8ab5bc2450"
    assert hashlib.sha256(data).hexdigest() == "444ec4c5bc22a310a40d32c65dca9dff7b223e6d0378f1da2666b9525de753cd"
    assert slow_decode(data, model.frequencies, 4, [0, 1] * 12) == codes.transpose(2, 0, 1).reshape(-1).tolist()
    np.testing.assert_array_equal(model.decode(data, 1, 2, 12), codes)


def test_deterministic():
    training = skewed_codes((4, 8, 500), 1024, seed=0)
    first, second = EntropyModel.fit(training, 1024), EntropyModel.fit(list(training), 1024)
    assert first.to_bytes() == second.to_bytes() and first.table_hash == second.table_hash
    codes = skewed_codes((2, 8, 200), 1024, seed=1)
    assert first.encode(codes) == first.encode(codes) == second.encode(codes)


def test_skewed_codes_compress_below_raw_size():
    model = EntropyModel.fit(skewed_codes((8, 8, 1600), 1024, seed=0), 1024)
    codes = skewed_codes((1, 8, 1600), 1024, seed=1)
    raw_bytes = 8 * 1600 * 10 // 8
    assert len(model.encode(codes)) < 0.7 * raw_bytes


def test_uniform_codes_stay_within_one_percent_of_raw_size():
    rng = np.random.default_rng(0)
    model = EntropyModel.fit(rng.integers(0, 1024, (100, 8, 1600)), 1024)
    codes = rng.integers(0, 1024, (1, 8, 1600))
    assert abs(len(model.encode(codes)) - 16000) < 0.01 * 16000


def test_ten_seconds_of_codes_round_trip_in_bounded_time():
    """Ten seconds at 48 kHz, hop 300: 12,800 symbols, coded in milliseconds. The bound, about a thousand
    times that, catches a coder gone quadratic or stuck; it is not a speed target."""
    model = EntropyModel.fit(skewed_codes((4, 8, 1600), 1024, seed=0), 1024)
    codes = skewed_codes((1, 8, 1600), 1024, seed=1)
    start = time.perf_counter()
    decoded = model.decode(model.encode(codes), 1, 8, 1600)
    seconds = time.perf_counter() - start
    np.testing.assert_array_equal(decoded, codes)
    assert seconds < 10, f"entropy coding 10 s of codes took {seconds:.1f} s"


def test_fit_takes_a_list_of_different_lengths_and_smooths():
    model = EntropyModel.fit([np.zeros((2, 10), dtype=np.int64), np.ones((2, 3), dtype=np.int64)], 8, 8)
    assert model.frequencies.shape == (2, 8)
    assert model.frequencies.min() >= 1
    assert (model.frequencies.sum(axis=1) == 256).all()
    assert model.frequencies[0, 0] > model.frequencies[0, 1] > model.frequencies[0, 2]


def test_quantize_frequencies():
    counts = np.array([[1, 1, 1], [10**9, 1, 1], [5, 3, 2]])
    frequencies = quantize_frequencies(counts, 4)
    assert (frequencies.sum(axis=1) == 16).all() and frequencies.min() >= 1
    np.testing.assert_array_equal(frequencies, [[6, 5, 5], [14, 1, 1], [7, 5, 4]])


def test_bad_models_and_inputs():
    with pytest.raises(ValueError, match="must sum to"):
        EntropyModel(np.array([[1, 2]]), 4)
    with pytest.raises(ValueError, match=">= 1"):
        EntropyModel(np.array([[0, 16]]), 4)
    with pytest.raises(ValueError, match="raise precision_bits"):
        EntropyModel.fit(np.zeros((1, 1, 4), dtype=np.int64), 4096, precision_bits=8)
    model = EntropyModel.fit(skewed_codes((1, 2, 50), 64, seed=0), 64)
    with pytest.raises(BitstreamError, match="tables for 2 codebooks, the stream uses 3"):
        model.encode(np.zeros((1, 3, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"lie in \[0, 64\)"):
        model.encode(np.full((1, 2, 5), 64))
    with pytest.raises(ValueError, match="codes are integers, got dtype float64"):
        EntropyModel.fit([np.array([[1.7, 2.2]])], 64)  # (counted as 1 and 2, silently)
    with pytest.raises(ValueError, match="codes are integers, got dtype float64"):
        model.encode(np.full((1, 2, 5), 1.5))
    for flat in (np.array([1, 2, 3]), [np.int64(3)]):
        with pytest.raises(ValueError, match=r"each example must be \(K, frames\) codes"):
            EntropyModel.fit(flat, 64)
    with pytest.raises(ValueError, match="give 1 or more channels and 0 or more frames"):
        model.decode(model.encode(np.zeros((1, 2, 0), np.int64)), 1, 2, -1)


def test_table_serialization(tmp_path):
    model = EntropyModel.fit(skewed_codes((2, 8, 300), 1024, seed=0), 1024)
    assert EntropyModel.from_bytes(model.to_bytes()).table_hash == model.table_hash
    model.save(tmp_path / "table.adce")
    loaded = EntropyModel.load(tmp_path / "table.adce")
    np.testing.assert_array_equal(loaded.frequencies, model.frequencies)
    assert loaded.precision_bits == 16 and [p.name for p in tmp_path.iterdir()] == ["table.adce"]
    data = bytearray(model.to_bytes())
    data[100] ^= 1
    with pytest.raises(BitstreamError, match="CRC mismatch"):
        EntropyModel.from_bytes(bytes(data))
    with pytest.raises(BitstreamError, match="bad magic"):
        EntropyModel.from_bytes(b"NOPE" + bytes(data[4:]))
    with pytest.raises(BitstreamError, match="truncated entropy table"):
        EntropyModel.from_bytes(bytes(data[:-3]))
    with pytest.raises(BitstreamError, match="does not exist"):
        EntropyModel.load(tmp_path / "missing.adce")
    never = bytearray(model.to_bytes()[:-4])
    never[4] = 0  # version 0, with a CRC that matches
    never += zlib.crc32(bytes(never)).to_bytes(4, "big")
    with pytest.raises(BitstreamError, match="entropy table version 0 was never written"):
        EntropyModel.from_bytes(bytes(never))
    with pytest.raises(BitstreamError, match="is a folder: give the table's file"):
        EntropyModel.load(tmp_path)
    with pytest.raises(BitstreamError, match="it names a folder: give a file name"):
        model.save(tmp_path)


def test_corrupt_payload_raises_or_decodes_garbage_but_never_crashes_or_hangs():
    model = EntropyModel.fit(skewed_codes((2, 4, 400), 256, seed=0), 256)
    codes = skewed_codes((1, 4, 100), 256, seed=1)
    data = model.encode(codes)
    detected = 0
    start = time.perf_counter()
    for position in range(len(data)):
        for mask in (0x01, 0x80, 0xFF):
            corrupt = bytearray(data)
            corrupt[position] ^= mask
            try:
                decoded = model.decode(bytes(corrupt), 1, 4, 100)
            except BitstreamError as error:
                assert str(error).startswith("corrupt entropy payload")
                detected += 1
            else:
                assert decoded.shape == codes.shape and decoded.min() >= 0 and decoded.max() < 256
    for cut in range(len(data)):
        with pytest.raises(BitstreamError, match="corrupt entropy payload"):
            model.decode(data[:cut], 1, 4, 100)
    with pytest.raises(BitstreamError, match="corrupt entropy payload"):
        model.decode(data + b"\0", 1, 4, 100)
    for seed in range(20):
        garbage = np.random.default_rng(seed).integers(0, 256, 300, dtype=np.uint8).tobytes()
        try:
            model.decode(garbage, 1, 4, 100)
        except BitstreamError:
            detected += 1
    assert detected > len(data)
    assert time.perf_counter() - start < 20
