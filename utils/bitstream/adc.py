"""The `.adc` compressed-audio container: header, codes packed frame by frame, CRC32.

The byte layout, field meanings and versioning rules are in `docs/bitstream.md`. This module is
pure bytes and numpy: it never touches a model; `utils.bitstream.bits` packs the codes. Codes are
`(channels, K, frames)` integer arrays, values in `[0, codebook_size)` (not offset by codebook).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import zlib
from typing import Protocol

import numpy as np

from utils.bitstream.bits import MAX_CODE_BITS, bits_per_code, pack_codes, packed_bytes, unpack_codes
from utils.errors import CodecError
from utils.files import check_input_exists, check_output_folder, read_failure, write_outputs

MAGIC = b"ADCB"
FORMAT_VERSION = 1
FLAG_ENTROPY_CODED = 0x01
KNOWN_FLAGS = FLAG_ENTROPY_CODED
HASH_BYTES = 8
CRC_BYTES = 4
MAX_MODEL_NAME_BYTES = 64
MAX_HEADER_BYTES = 128

# magic, version, flags, channels, sample_rate, hop, n_samples, codebook_size, payload_bytes,
# n_codebooks, model_name_bytes, decoder_hash, entropy_hash; the model name follows.
_FIXED_HEADER = struct.Struct(">4sBBHIIQIIBB8s8s")
FIXED_HEADER_BYTES = _FIXED_HEADER.size
_PAYLOAD_BYTES_OFFSET = 28
_NAME_LENGTH_OFFSET = 33
_NO_HASH = bytes(HASH_BYTES)

assert FIXED_HEADER_BYTES == 50
assert FIXED_HEADER_BYTES + MAX_MODEL_NAME_BYTES < MAX_HEADER_BYTES


class BitstreamError(CodecError, ValueError):
    """A malformed, corrupt, truncated or mismatched `.adc` file or entropy payload."""


class EntropyCoder(Protocol):
    """What the container needs from an entropy model (see `utils.bitstream.entropy.EntropyModel`)."""

    @property
    def table_hash(self) -> bytes: ...

    @property
    def codebook_size(self) -> int: ...

    def encode(self, codes: np.ndarray) -> bytes: ...

    def decode(self, data: bytes, channels: int, n_codebooks: int, frames: int) -> np.ndarray: ...


UNREGISTERED_NAME = "custom"  # the model name older files carry for checkpoints outside the registry


def short_hash(data: bytes) -> bytes:
    """First 8 bytes of SHA-256: the decoder and entropy-table fingerprints stored in headers."""
    return hashlib.sha256(data).digest()[:HASH_BYTES]


@dataclasses.dataclass(frozen=True)
class StreamHeader:
    """Everything a reader needs to unpack the payload and pick the right decoder.

    `entropy_coded` and `entropy_hash` are filled in by `encode_adc` from the entropy model it is
    given; the values passed in are ignored there.
    """

    sample_rate: int
    hop: int
    channels: int
    n_samples: int
    n_codebooks: int
    codebook_size: int
    model_name: str = ""
    decoder_hash: bytes = _NO_HASH
    entropy_coded: bool = False
    entropy_hash: bytes = _NO_HASH
    version: int = FORMAT_VERSION

    @property
    def bits_per_code(self) -> int:
        """ceil(log2(codebook_size)), at least 1."""
        return bits_per_code(self.codebook_size)

    @property
    def payload_bits_per_frame(self) -> int:
        """Bits one frame of all channels takes in the raw (not entropy-coded) payload."""
        return self.channels * self.n_codebooks * self.bits_per_code

    @property
    def n_frames(self) -> int:
        """ceil(n_samples / hop): the encoder pads the last partial hop."""
        return -(-self.n_samples // self.hop)

    @property
    def named_model(self) -> str:
        """The registered model the file names for its decoding, or '' for none (checkpoints outside
        the registry; files written before that rule name those 'custom')."""
        return "" if self.model_name == UNREGISTERED_NAME else self.model_name

    @property
    def raw_payload_bytes(self) -> int:
        return packed_bytes(self.n_frames * self.channels * self.n_codebooks, self.bits_per_code)

    @property
    def bitrate(self) -> float:
        """Raw payload bits per second."""
        return self.payload_bits_per_frame * self.sample_rate / self.hop

    def validate(self) -> None:
        """Raise BitstreamError naming the first field that is out of range."""
        limits = (
            ("sample_rate", self.sample_rate, 1, 2**32 - 1),
            ("hop", self.hop, 1, 2**32 - 1),
            ("channels", self.channels, 1, 2**16 - 1),
            ("n_samples", self.n_samples, 0, 2**64 - 1),
            ("n_codebooks", self.n_codebooks, 1, 255),
            ("codebook_size", self.codebook_size, 2, 2**MAX_CODE_BITS - 1),
        )
        for name, value, low, high in limits:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise BitstreamError(f"header field {name}={value!r} is a {type(value).__name__}, not an integer: "
                                     "give an int")
            if not low <= value <= high:
                raise BitstreamError(f"header field {name}={value!r} is out of range [{low}, {high}]")
        if self.version != FORMAT_VERSION:
            raise BitstreamError(f"cannot write format version {self.version}: this toolkit writes {FORMAT_VERSION}")
        name_bytes = self.model_name.encode("utf-8")
        if len(name_bytes) > MAX_MODEL_NAME_BYTES:
            raise BitstreamError(
                f"model name is {len(name_bytes)} bytes in UTF-8, at most {MAX_MODEL_NAME_BYTES} fit: shorten it"
            )
        for name in ("decoder_hash", "entropy_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != HASH_BYTES:
                raise BitstreamError(f"header field {name} must be {HASH_BYTES} bytes (see short_hash), got {value!r}")

    def check_decoder(self, decoder_hash: bytes) -> None:
        """Raise unless `decoder_hash` (short_hash of the decoder state) is the one the file names."""
        if self.decoder_hash != _NO_HASH and decoder_hash != self.decoder_hash:
            if self.named_model:
                coded, fix = f"model {self.named_model!r}", f"decode with model {self.named_model!r}"
            else:
                coded = "checkpoints outside the model registry"
                fix = ("decode with the encoder and decoder checkpoints it was coded with (codec.py decode "
                       "--encoder/--decoder)")
            raise BitstreamError(
                f"this file was encoded with {coded} (decoder {self.decoder_hash.hex()}), "
                f"the loaded decoder is {decoder_hash.hex()}: {fix}"
            )


def _pack_header(header: StreamHeader, payload_bytes: int) -> bytes:
    name_bytes = header.model_name.encode("utf-8")
    flags = FLAG_ENTROPY_CODED if header.entropy_coded else 0
    fixed = _FIXED_HEADER.pack(
        MAGIC, header.version, flags, header.channels, header.sample_rate, header.hop, header.n_samples,
        header.codebook_size, payload_bytes, header.n_codebooks, len(name_bytes),
        header.decoder_hash, header.entropy_hash,
    )
    packed = fixed + name_bytes
    assert len(packed) < MAX_HEADER_BYTES
    return packed


def _header_bytes_needed(prefix: bytes) -> int:
    """Check what a header prefix already shows (magic, version, flags); return the header's length.

    Returns FIXED_HEADER_BYTES while the model-name length byte has not arrived.
    """
    seen = prefix[: len(MAGIC)]
    if seen != MAGIC[: len(seen)]:
        raise BitstreamError("not an .adc file (bad magic): give a file written by this toolkit's encoder")
    if len(prefix) > 4:
        version = prefix[4]
        if version > FORMAT_VERSION:
            raise BitstreamError(
                f"format version {version} is newer than this toolkit supports ({FORMAT_VERSION}); upgrade"
            )
        if version == 0:
            raise BitstreamError("format version 0 is invalid: the file is corrupt")
    if len(prefix) > 5 and prefix[5] & ~KNOWN_FLAGS:
        raise BitstreamError(
            f"unknown header flags 0x{prefix[5]:02x}: the file is corrupt or needs a newer toolkit; upgrade"
        )
    if len(prefix) <= _NAME_LENGTH_OFFSET:
        return FIXED_HEADER_BYTES
    name_length = prefix[_NAME_LENGTH_OFFSET]
    if name_length > MAX_MODEL_NAME_BYTES:
        raise BitstreamError(f"model name length {name_length} exceeds {MAX_MODEL_NAME_BYTES}: the file is corrupt")
    return FIXED_HEADER_BYTES + name_length


def _unpack_header(header_bytes: bytes) -> tuple[StreamHeader, int]:
    """Parse a complete header; return it and the payload length in bytes."""
    (_, version, flags, channels, sample_rate, hop, n_samples, codebook_size, payload_bytes, n_codebooks,
     _, decoder_hash, entropy_hash) = _FIXED_HEADER.unpack_from(header_bytes)
    try:
        model_name = header_bytes[FIXED_HEADER_BYTES:].decode("utf-8")
    except UnicodeDecodeError:
        raise BitstreamError("model name is not valid UTF-8: the file is corrupt") from None
    header = StreamHeader(
        sample_rate=sample_rate, hop=hop, channels=channels, n_samples=n_samples, n_codebooks=n_codebooks,
        codebook_size=codebook_size, model_name=model_name, decoder_hash=decoder_hash,
        entropy_coded=bool(flags & FLAG_ENTROPY_CODED), entropy_hash=entropy_hash, version=version,
    )
    try:
        header.validate()
    except BitstreamError as error:
        raise BitstreamError(f"{error}: the file is corrupt") from None
    if not header.entropy_coded:
        if entropy_hash != _NO_HASH:
            raise BitstreamError("raw payload with an entropy-table hash: the file is corrupt")
        if payload_bytes != header.raw_payload_bytes:
            raise BitstreamError(
                f"payload size {payload_bytes} does not match {header.n_frames} frames of "
                f"{header.payload_bits_per_frame} bits ({header.raw_payload_bytes} bytes): the file is corrupt"
            )
    return header, payload_bytes


def _check_codes(header: StreamHeader, codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    expected = (header.channels, header.n_codebooks, header.n_frames)
    if codes.shape != expected:
        raise BitstreamError(
            f"codes have shape {codes.shape}, the header needs (channels, K, frames) = {expected}: "
            f"frames must be ceil(n_samples / hop)"
        )
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
        raise BitstreamError(f"codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= header.codebook_size):
        raise BitstreamError(
            f"codes must lie in [0, {header.codebook_size}), got [{codes.min()}, {codes.max()}]: "
            "pass raw per-codebook indices"
        )
    return codes.astype(np.int64, copy=False)


def _split_frames(flat: np.ndarray, header: StreamHeader) -> np.ndarray:
    """Flat frame-major codes to (frames, channels, K), checking they fit the codebook."""
    if flat.size and flat.max() >= header.codebook_size:
        raise BitstreamError(
            f"code {flat.max()} is not below codebook size {header.codebook_size}: the file is corrupt"
        )
    return flat.reshape(-1, header.channels, header.n_codebooks)


def _check_padding(last_byte: int, used_bits: int) -> None:
    if used_bits % 8 and last_byte & (0xFF >> (used_bits % 8)):
        raise BitstreamError("nonzero padding bits after the last frame: the file is corrupt")


def _decode_raw_payload(header: StreamHeader, payload: bytes) -> np.ndarray:
    frames = header.n_frames
    count = frames * header.channels * header.n_codebooks
    if payload:
        _check_padding(payload[-1], frames * header.payload_bits_per_frame)
    frame_codes = _split_frames(unpack_codes(payload, count, header.bits_per_code), header)
    return np.ascontiguousarray(frame_codes.transpose(1, 2, 0))


def _check_entropy_model(header: StreamHeader, entropy_model: EntropyCoder | None) -> EntropyCoder:
    if entropy_model is None:
        raise BitstreamError(
            f"the file is entropy-coded (table {header.entropy_hash.hex()}): pass the entropy model it was written with"
        )
    if entropy_model.table_hash != header.entropy_hash:
        raise BitstreamError(
            f"entropy table mismatch: the file needs table {header.entropy_hash.hex()}, the given table is "
            f"{entropy_model.table_hash.hex()}; load the table the file was written with"
        )
    if entropy_model.codebook_size != header.codebook_size:  # its codes would not be the header's
        raise BitstreamError(f"codebook size {header.codebook_size} does not match its entropy table's "
                             f"{entropy_model.codebook_size}: the file is corrupt")
    return entropy_model


def _check_crc(data: bytes) -> None:
    stored = int.from_bytes(data[-CRC_BYTES:], "big")
    if zlib.crc32(data[:-CRC_BYTES]) != stored:
        raise BitstreamError("CRC mismatch: the file is corrupt; re-encode or re-transfer it")


def encode_adc(header: StreamHeader, codes: np.ndarray, entropy_model: EntropyCoder | None = None) -> bytes:
    """Serialize codes `(channels, K, frames)` to `.adc` bytes; range-code them if a model is given."""
    header = dataclasses.replace(
        header,
        entropy_coded=entropy_model is not None,
        entropy_hash=_NO_HASH if entropy_model is None else entropy_model.table_hash,
    )
    header.validate()
    codes = _check_codes(header, codes)
    if entropy_model is None:
        payload = pack_codes(codes.transpose(2, 0, 1), header.bits_per_code)
    else:
        payload = entropy_model.encode(codes)
    if len(payload) >= 2**32:
        raise BitstreamError(f"payload of {len(payload)} bytes exceeds the 4 GiB limit: split the audio")
    body = _pack_header(header, len(payload)) + payload
    return body + zlib.crc32(body).to_bytes(CRC_BYTES, "big")


def _adc_bytes(data: bytes, function: str) -> bytes:
    """`data` (bytes or any other buffer) as bytes, else a BitstreamError saying what `function` takes:
    bytes() would refuse a path cryptically and read an int as that many zero bytes."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (str, os.PathLike)):
        raise BitstreamError(f"{function} takes an .adc file's bytes, got the path {os.fspath(data)!r}: read the "
                             "file with read_adc(path), or pass Path(path).read_bytes()")
    try:
        return bytes(memoryview(data))
    except TypeError:
        raise BitstreamError(f"{function} takes an .adc file's bytes, got a {type(data).__name__}: "
                             "pass bytes (a file's: Path(path).read_bytes())") from None


def decode_adc(data: bytes, entropy_model: EntropyCoder | None = None) -> tuple[StreamHeader, np.ndarray]:
    """Parse and verify `.adc` bytes; return the header and codes `(channels, K, frames)` (int64)."""
    header, payload = verify_adc(_adc_bytes(data, "decode_adc"))
    return header, _decode_payload(header, payload, entropy_model)


def _decode_payload(header: StreamHeader, payload: bytes, entropy_model: EntropyCoder | None) -> np.ndarray:
    if header.entropy_coded:
        model = _check_entropy_model(header, entropy_model)
        return model.decode(payload, header.channels, header.n_codebooks, header.n_frames)
    return _decode_raw_payload(header, payload)


def verify_adc(data: bytes) -> tuple[StreamHeader, bytes]:
    """The header and payload of `.adc` bytes, once their length and CRC are checked: nothing of the
    header is believed before (the payload is not decoded: an entropy-coded one needs its table)."""
    data = _adc_bytes(data, "verify_adc")
    header_bytes = _header_bytes_needed(data)
    if len(data) < header_bytes + CRC_BYTES:
        raise BitstreamError(
            f"truncated file: expected at least {header_bytes + CRC_BYTES} bytes, got {len(data)}; "
            "re-transfer the complete file"
        )
    payload_bytes = int.from_bytes(data[_PAYLOAD_BYTES_OFFSET : _PAYLOAD_BYTES_OFFSET + 4], "big")
    _check_length(len(data), header_bytes + payload_bytes + CRC_BYTES)
    _check_crc(data)
    header, _ = _unpack_header(data[:header_bytes])
    return header, data[header_bytes:-CRC_BYTES]


def write_adc(
    path: str | os.PathLike, header: StreamHeader, codes: np.ndarray, entropy_model: EntropyCoder | None = None
) -> StreamHeader:
    """Write an `.adc` file atomically (temp file beside `path`, then rename); return the header written."""
    return save_adc(path, encode_adc(header, codes, entropy_model))


def save_adc(path: str | os.PathLike, data: bytes) -> StreamHeader:
    """Write `.adc` bytes atomically (temp file beside `path`, then rename); return their header."""
    check_output_folder(path, BitstreamError)
    write_outputs({path: data})
    return decode_header(data)


def read_adc(path: str | os.PathLike, entropy_model: EntropyCoder | None = None) -> tuple[StreamHeader, np.ndarray]:
    """Read and verify an `.adc` file; return the header and codes `(channels, K, frames)` (int64)."""
    adc = open_adc(path)
    return adc.header, adc.codes(entropy_model)


@dataclasses.dataclass(frozen=True)
class AdcFile:
    """An `.adc` file read once: its header, believed after the file's length and CRC were checked, and
    its payload, decoded on demand (an entropy-coded one needs its table, which the header names)."""

    path: str
    header: StreamHeader
    payload: bytes

    def codes(self, entropy_model: EntropyCoder | None = None) -> np.ndarray:
        """The codes `(channels, K, frames)` (int64)."""
        try:
            return _decode_payload(self.header, self.payload, entropy_model)
        except BitstreamError as error:
            raise BitstreamError(f"{self.path}: {error}") from None


def open_adc(path: str | os.PathLike) -> AdcFile:
    """Read an `.adc` file and check its length and CRC (its payload is not decoded)."""
    data = _read_bytes(path)
    try:
        header, payload = verify_adc(data)
    except BitstreamError as error:
        raise BitstreamError(f"{path}: {error}") from None
    return AdcFile(os.fspath(path), header, payload)


def _read_bytes(path: str | os.PathLike) -> bytes:
    """The file's bytes, once its header shows that its length is right (a huge file is not read)."""
    if os.path.isdir(path):
        raise BitstreamError(f"{path} is a folder: give an .adc file (codec.py decode takes folders)")
    check_input_exists(path, BitstreamError)
    if not os.path.isfile(path):  # a FIFO would block the read; a device has no length to check
        raise BitstreamError(f"input {path} is not a regular file (a pipe or a device?): give an .adc file's path")
    try:
        stream = open(path, "rb")
    except OSError as error:  # no read permission, say
        raise read_failure(path, error, BitstreamError) from None
    with stream:
        size = os.fstat(stream.fileno()).st_size
        prefix = stream.read(MAX_HEADER_BYTES)
        try:
            header_bytes = _header_bytes_needed(prefix)
            if len(prefix) >= header_bytes:
                payload_bytes = int.from_bytes(prefix[_PAYLOAD_BYTES_OFFSET : _PAYLOAD_BYTES_OFFSET + 4], "big")
                _check_length(size, header_bytes + payload_bytes + CRC_BYTES)
        except BitstreamError as error:
            raise BitstreamError(f"{path}: {error}") from None
        return prefix + stream.read()


def _check_length(size: int, expected: int) -> None:
    if size < expected:
        raise BitstreamError(f"truncated file: expected {expected} bytes, got {size}; re-transfer the complete file")
    if size > expected:
        raise BitstreamError(
            f"trailing data: expected {expected} bytes, got {size}; the file is corrupt or has data appended"
        )


def decode_header(data: bytes) -> StreamHeader:
    """Parse only the header at the start of `data` (no CRC check): for inspecting a file quickly."""
    data = _adc_bytes(data, "decode_header")
    header_bytes = _header_bytes_needed(data)
    if len(data) < header_bytes:
        raise BitstreamError(f"truncated file: expected at least {header_bytes} bytes, got {len(data)}")
    return _unpack_header(data[:header_bytes])[0]


class AdcStreamReader:
    """Incremental `.adc` parser: feed bytes in any pieces, get each frame's codes as soon as it is complete.

    `feed(chunk)` returns a list of `(channels, K)` int64 arrays, in frame order. Raw payloads yield
    frames before the CRC has arrived (the CRC is checked when it does, and `close()` raises if it
    failed or the stream stopped early). Entropy-coded payloads are not frame-cuttable: their
    frames all come out once the payload and CRC have arrived and the CRC matches.
    """

    def __init__(self, entropy_model: EntropyCoder | None = None) -> None:
        self.entropy_model = entropy_model
        self.header: StreamHeader | None = None
        self.frames_read = 0
        self._inbox = bytearray()
        self._received = 0
        self._crc = 0
        self._header_bytes = 0
        self._payload_bytes = 0
        self._payload_seen = 0
        self._pending = bytearray()
        self._bit_offset = 0
        self._crc_bytes = bytearray()
        self._verified = False
        self._closed = False

    @property
    def expected_bytes(self) -> int | None:
        """Total file size once the header has been parsed, else None."""
        if self.header is None:
            return None
        return self._header_bytes + self._payload_bytes + CRC_BYTES

    def feed(self, chunk: bytes) -> list[np.ndarray]:
        if self._closed:
            raise BitstreamError("feed() after close(): start a new AdcStreamReader")
        chunk = _adc_bytes(chunk, "feed()")
        self._received += len(chunk)
        self._inbox += chunk
        frames: list[np.ndarray] = []
        if self.header is None and not self._parse_header():
            return frames
        self._take_payload()
        if self.header.entropy_coded:
            self._take_crc()
            if self._verified:
                frames = self._decode_entropy_payload()
        else:
            frames = self._raw_frames_ready()
            self._take_crc()
        return frames

    def close(self) -> StreamHeader:
        """Finish the stream: raise if it is truncated or its CRC failed; return the header."""
        self._closed = True
        if self.header is None:
            needed = _header_bytes_needed(bytes(self._inbox)) + CRC_BYTES
            raise BitstreamError(f"truncated stream: expected at least {needed} bytes, got {self._received}")
        if not self._verified:
            raise BitstreamError(f"truncated stream: expected {self.expected_bytes} bytes, got {self._received}")
        return self.header

    def _parse_header(self) -> bool:
        needed = _header_bytes_needed(bytes(self._inbox))
        if len(self._inbox) < needed:
            return False
        header_bytes = bytes(self._inbox[:needed])
        del self._inbox[:needed]
        self.header, self._payload_bytes = _unpack_header(header_bytes)
        if self.header.entropy_coded:
            _check_entropy_model(self.header, self.entropy_model)
        self._header_bytes = needed
        self._crc = zlib.crc32(header_bytes)
        return True

    def _take_payload(self) -> None:
        take = min(len(self._inbox), self._payload_bytes - self._payload_seen)
        if take:
            piece = bytes(self._inbox[:take])
            del self._inbox[:take]
            self._crc = zlib.crc32(piece, self._crc)
            self._pending += piece
            self._payload_seen += take

    def _take_crc(self) -> None:
        if self._payload_seen < self._payload_bytes:
            return
        take = min(len(self._inbox), CRC_BYTES - len(self._crc_bytes))
        self._crc_bytes += self._inbox[:take]
        del self._inbox[:take]
        if self._inbox:
            raise BitstreamError(
                f"trailing data: expected {self.expected_bytes} bytes, got {self._received}; "
                "the stream is corrupt or has data appended"
            )
        if len(self._crc_bytes) == CRC_BYTES and not self._verified:
            if int.from_bytes(self._crc_bytes, "big") != self._crc:
                raise BitstreamError("CRC mismatch: the stream is corrupt; re-encode or re-transfer it")
            self._verified = True

    def _raw_frames_ready(self) -> list[np.ndarray]:
        header = self.header
        bits_per_frame = header.payload_bits_per_frame
        available = (len(self._pending) * 8 - self._bit_offset) // bits_per_frame
        ready = min(header.n_frames - self.frames_read, available)
        if ready <= 0:
            return []
        count = ready * header.channels * header.n_codebooks
        used_bits = self._bit_offset + ready * bits_per_frame
        flat = unpack_codes(self._pending[: -(-used_bits // 8)], count, header.bits_per_code, self._bit_offset)
        frame_codes = _split_frames(flat, header)
        self.frames_read += ready
        del self._pending[: used_bits // 8]
        self._bit_offset = used_bits % 8
        if self.frames_read == header.n_frames and self._pending:
            _check_padding(self._pending[0], self._bit_offset)
        return list(frame_codes)

    def _decode_entropy_payload(self) -> list[np.ndarray]:
        header = self.header
        codes = self.entropy_model.decode(bytes(self._pending), header.channels, header.n_codebooks, header.n_frames)
        self._pending.clear()
        self.frames_read = header.n_frames
        return list(np.ascontiguousarray(codes.transpose(2, 0, 1)))
