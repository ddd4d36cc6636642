"""Lossless entropy coding of codec codes: a byte-oriented range coder with per-codebook tables.

Integer arithmetic only, so the bytes are the same on every machine. The coder keeps a 32-bit
`range` and a `low` with one carry bit above it; carries ripple into bytes already produced through
a one-byte cache and a count of pending 0xFF bytes (the scheme LZMA's range coder uses). Each
symbol narrows the range to `(range >> precision) * freq`, so the decoder divides by the same
`range >> precision`; the top of the range that truncation leaves unused is what lets the decoder
notice many corruptions (a quotient past the table's total).

Symbols are coded frame by frame, and within a frame channel by channel, codebook by codebook, each
with its codebook's table: the same order as the raw `.adc` payload.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Sequence
from itertools import cycle

import numpy as np

from utils.bitstream.adc import BitstreamError, short_hash
from utils.files import check_output_folder, read_failure, write_outputs

TABLE_MAGIC = b"ADCE"
TABLE_VERSION = 1
MAX_PRECISION_BITS = 16
_TABLE_HEADER = struct.Struct(">4sBBHI")
_CODE_BYTES = 4
_TOP = 1 << 32
_BOTTOM = 1 << 24


class _RangeEncoder:
    """Appends coded bytes to `output`. The very first byte of this scheme is always 0; it is not written."""

    def __init__(self, precision_bits: int) -> None:
        self.precision_bits = precision_bits
        self.low = 0
        self.range = _TOP - 1
        self.cache = 0
        self.pending_ff = 0
        self.started = False
        self.output = bytearray()

    def encode(self, start: int, frequency: int) -> None:
        step = self.range >> self.precision_bits
        self.low += step * start
        self.range = step * frequency
        while self.range < _BOTTOM:
            self.range <<= 8
            self._shift_low()

    def _shift_low(self) -> None:
        low = self.low
        if low < 0xFF000000 or low >= _TOP:
            carry = low >> 32
            if self.started:
                self.output.append((self.cache + carry) & 0xFF)
            self.started = True
            if self.pending_ff:
                self.output += bytes([(0xFF + carry) & 0xFF]) * self.pending_ff
                self.pending_ff = 0
            self.cache = (low >> 24) & 0xFF
        else:
            self.pending_ff += 1
        self.low = (low & 0x00FFFFFF) << 8

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        return bytes(self.output)


class _RangeDecoder:
    def __init__(self, data: bytes, precision_bits: int) -> None:
        if len(data) < _CODE_BYTES:
            raise BitstreamError(
                f"corrupt entropy payload: {len(data)} bytes, a range-coded stream has at least {_CODE_BYTES}"
            )
        self.data = data
        self.precision_bits = precision_bits
        self.total = 1 << precision_bits
        self.position = _CODE_BYTES
        self.code = int.from_bytes(data[:_CODE_BYTES], "big")
        self.range = _TOP - 1

    def decode(self, cumulative: list[int], frequencies: list[int]) -> int:
        step = self.range >> self.precision_bits
        value = self.code // step
        if value >= self.total:
            raise BitstreamError("corrupt entropy payload: value outside the table; the file is corrupt")
        symbol = bisect.bisect_right(cumulative, value) - 1
        self.code -= step * cumulative[symbol]
        self.range = step * frequencies[symbol]
        while self.range < _BOTTOM:
            self.range <<= 8
            # A valid payload is consumed exactly, so needing a byte past the end means corruption.
            if self.position == len(self.data):
                raise BitstreamError("corrupt entropy payload: it ends before the last symbol; the file is corrupt")
            self.code = (self.code << 8) | self.data[self.position]
            self.position += 1
        return symbol

    def finish(self) -> None:
        if self.position != len(self.data):
            raise BitstreamError(
                f"corrupt entropy payload: the symbols used only {self.position} bytes of {len(self.data)}; "
                "the file is corrupt or the wrong table was used"
            )


def quantize_frequencies(counts: np.ndarray, precision_bits: int) -> np.ndarray:
    """Integer frequencies proportional to `counts` (each row), every one >= 1, rows summing to 2**precision.

    Integer arithmetic only: each symbol gets 1 plus its floor share of the rest; the leftover units
    go to the largest remainders, ties to the lower symbol index.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = 1 << precision_bits
    n_symbols = counts.shape[1]
    spare = total - n_symbols
    frequencies = np.empty_like(counts)
    for row, row_counts in enumerate(counts):
        row_sum = int(row_counts.sum())
        scaled = row_counts * spare
        share, remainder = scaled // row_sum, scaled % row_sum
        leftover = spare - int(share.sum())
        order = np.lexsort((np.arange(n_symbols), -remainder))
        share[order[:leftover]] += 1
        frequencies[row] = share + 1
    return frequencies


class EntropyModel:
    """Per-codebook static frequency tables and the range coder that uses them.

    `frequencies` is `(n_codebooks, codebook_size)` of positive integers, each row summing to
    `2**precision_bits`. A stream with K codebooks uses the first K tables.
    """

    def __init__(self, frequencies: np.ndarray, precision_bits: int = MAX_PRECISION_BITS) -> None:
        frequencies = np.asarray(frequencies)
        if not 1 <= precision_bits <= MAX_PRECISION_BITS:
            raise ValueError(f"precision_bits must be in [1, {MAX_PRECISION_BITS}], got {precision_bits}")
        if frequencies.ndim != 2 or frequencies.shape[0] < 1 or frequencies.shape[1] < 2:
            raise ValueError(f"frequencies must be (n_codebooks, codebook_size >= 2), got shape {frequencies.shape}")
        if not np.issubdtype(frequencies.dtype, np.integer):
            raise ValueError(f"frequencies must be integers, got dtype {frequencies.dtype}")
        if frequencies.min() < 1:
            raise ValueError("every frequency must be >= 1 so that every code can be coded: smooth the counts")
        sums = frequencies.sum(axis=1)
        if np.any(sums != 1 << precision_bits):
            raise ValueError(f"each table must sum to 2**{precision_bits} = {1 << precision_bits}, got {sums.tolist()}")
        self.precision_bits = precision_bits
        self.frequencies = frequencies.astype(np.int64)
        self.frequencies.setflags(write=False)
        cumulative = np.zeros((frequencies.shape[0], frequencies.shape[1] + 1), dtype=np.int64)
        np.cumsum(self.frequencies, axis=1, out=cumulative[:, 1:])
        self._cumulative = [row.tolist() for row in cumulative]
        self._frequency_lists = [row.tolist() for row in self.frequencies]
        self.table_hash = short_hash(self.to_bytes())

    @property
    def n_codebooks(self) -> int:
        return self.frequencies.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.frequencies.shape[1]

    @classmethod
    def fit(
        cls,
        codes: np.ndarray | Sequence[np.ndarray],
        codebook_size: int,
        precision_bits: int = MAX_PRECISION_BITS,
    ) -> EntropyModel:
        """Count codes `(N, K, frames)` or a list of `(K, frames)` arrays; add-one smoothing; quantize."""
        if codebook_size > 1 << precision_bits:
            fix = (f"raise precision_bits (at most {MAX_PRECISION_BITS})" if precision_bits < MAX_PRECISION_BITS
                   else f"tables of {MAX_PRECISION_BITS} bits hold at most {1 << MAX_PRECISION_BITS} codes: "
                   "store such codes raw")
            raise ValueError(f"codebook_size {codebook_size} exceeds 2**precision_bits = {1 << precision_bits}: {fix}")
        examples = [np.asarray(item) for item in codes]
        if not examples:
            raise ValueError("no training codes given")
        n_codebooks = examples[0].shape[0] if examples[0].ndim else 0
        counts = np.ones((max(n_codebooks, 1), codebook_size), dtype=np.int64)
        for example in examples:
            if example.ndim != 2 or example.shape[0] != n_codebooks:
                raise ValueError(f"each example must be (K, frames) codes, K the same for all, got shape "
                                 f"{example.shape}")
            _check_integers(example)
            if example.size and (example.min() < 0 or example.max() >= codebook_size):
                raise ValueError(f"codes must lie in [0, {codebook_size}), got [{example.min()}, {example.max()}]")
            for codebook, row in enumerate(example):
                counts[codebook] += np.bincount(row.astype(np.int64), minlength=codebook_size)
        return cls(quantize_frequencies(counts, precision_bits), precision_bits)

    def to_bytes(self) -> bytes:
        """Magic, version, precision, K, size, big-endian uint16 frequencies, CRC32 of all that."""
        body = _TABLE_HEADER.pack(
            TABLE_MAGIC, TABLE_VERSION, self.precision_bits, self.n_codebooks, self.codebook_size
        ) + self.frequencies.astype(">u2").tobytes()
        return body + zlib.crc32(body).to_bytes(4, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> EntropyModel:
        data = bytes(data)
        if data[:4] != TABLE_MAGIC:
            raise BitstreamError("not an entropy table (bad magic): give a file written by EntropyModel.save")
        if len(data) < _TABLE_HEADER.size + 4:
            raise BitstreamError(f"truncated entropy table: {len(data)} bytes")
        _, version, precision_bits, n_codebooks, codebook_size = _TABLE_HEADER.unpack_from(data)
        if version > TABLE_VERSION:
            raise BitstreamError(
                f"entropy table version {version} is newer than this toolkit supports ({TABLE_VERSION}); upgrade"
            )
        if version < 1:
            raise BitstreamError(f"entropy table version {version} was never written: the table is corrupt")
        expected = _TABLE_HEADER.size + 2 * n_codebooks * codebook_size + 4
        if len(data) != expected:
            what = "truncated entropy table" if len(data) < expected else "entropy table with trailing data"
            raise BitstreamError(f"{what}: expected {expected} bytes, got {len(data)}")
        if zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "big"):
            raise BitstreamError("CRC mismatch: the entropy table is corrupt")
        table = np.frombuffer(data, dtype=">u2", count=n_codebooks * codebook_size, offset=_TABLE_HEADER.size)
        try:
            return cls(table.astype(np.int64).reshape(n_codebooks, codebook_size), precision_bits)
        except ValueError as error:
            raise BitstreamError(f"invalid entropy table ({error})") from None

    def save(self, path: str | os.PathLike) -> None:
        """Write the table atomically (temp file beside `path`, then rename)."""
        check_output_folder(path, BitstreamError)
        write_outputs({path: self.to_bytes()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> EntropyModel:
        if os.path.isdir(path):
            raise BitstreamError(f"entropy table {path} is a folder: give the table's file")
        if not os.path.isfile(path):
            raise BitstreamError(f"entropy table {path} does not exist: check the path")
        try:
            with open(path, "rb") as stream:
                data = stream.read()
        except OSError as error:  # no read permission, say
            raise read_failure(path, error, BitstreamError) from None
        return cls.from_bytes(data)

    def _tables(self, n_codebooks: int, channels: int) -> list[tuple[list[int], list[int]]]:
        """The table of each symbol position within one frame (channel-major, codebook-minor)."""
        if not 1 <= n_codebooks <= self.n_codebooks:
            raise BitstreamError(
                f"the entropy model has tables for {self.n_codebooks} codebooks, the stream uses {n_codebooks}: "
                "fit a model on codes with at least as many codebooks"
            )
        per_channel = [(self._cumulative[k], self._frequency_lists[k]) for k in range(n_codebooks)]
        return per_channel * channels

    def encode(self, codes: np.ndarray) -> bytes:
        """Range-code codes `(channels, K, frames)` (values in [0, codebook_size)) to bytes."""
        codes = np.asarray(codes)
        if codes.ndim != 3:
            raise ValueError(f"codes must be (channels, K, frames), got shape {codes.shape}")
        _check_integers(codes)
        channels, n_codebooks, _ = codes.shape
        tables = self._tables(n_codebooks, channels)
        if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{codes.min()}, {codes.max()}]")
        encoder = _RangeEncoder(self.precision_bits)
        symbols = codes.transpose(2, 0, 1).reshape(-1).tolist()
        encode = encoder.encode
        for symbol, (cumulative, frequencies) in zip(symbols, cycle(tables)):
            encode(cumulative[symbol], frequencies[symbol])
        return encoder.finish()

    def decode(self, data: bytes, channels: int, n_codebooks: int, frames: int) -> np.ndarray:
        """Inverse of `encode`: codes `(channels, K, frames)` as int64. Raises BitstreamError on corrupt data."""
        if channels < 1 or frames < 0:
            raise ValueError(f"{channels} channels and {frames} frames: give 1 or more channels and 0 or more frames")
        tables = self._tables(n_codebooks, channels)
        decoder = _RangeDecoder(bytes(data), self.precision_bits)
        decode = decoder.decode
        count = channels * n_codebooks * frames
        symbols = [decode(cumulative, frequencies) for _, (cumulative, frequencies) in zip(range(count), cycle(tables))]
        decoder.finish()
        flat = np.array(symbols, dtype=np.int64)
        return np.ascontiguousarray(flat.reshape(frames, channels, n_codebooks).transpose(1, 2, 0))


def _check_integers(codes: np.ndarray) -> None:
    if codes.dtype.kind not in "iu":
        raise ValueError(f"codes are integers, got dtype {codes.dtype}: give the indices the encoder gave")
