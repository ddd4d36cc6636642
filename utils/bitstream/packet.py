"""UDP packets of the live codec link: one packet per sender frame, codes bit-packed, CRC32.

Layout (big-endian), 32-byte header, payload, 4-byte CRC32 of header + payload (docs/bitstream.md):

    magic "AD" | version u8 | kind u8 | session u32 | seq u32 | frame_index u32 |
    capture_us u64 | decoder 4 bytes | streams u8 | n_codebooks u8 | code_bits u8 | n_frames u8 |
    payload | crc32

`kind` is CODES (payload: `streams * n_codebooks * n_frames` codes of `code_bits` bits, frame by
frame, packed as `utils.bitstream.bits` packs them) or END (payload: u64 number of samples the sender
coded; the receiver cuts its output to it). `frame_index` counts codec frames (hops) from the start
of the stream, so a receiver sees how many frames a lost packet held. `session` is drawn per sender
run: a receiver follows one session and treats packets of another as foreign. `capture_us` is the
sender's wall clock when the frame's audio was captured (for latency on one host). `decoder` is the
first 4 bytes of the sender's decoder fingerprint (`StreamingCodec.decoder_hash`, as in `.adc`
headers): a receiver with another model tells by it, even one of the same code layout.

Pure bytes and numpy; codes are `(streams, n_codebooks, n_frames)` integers in `[0, 2**code_bits)`.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib

import numpy as np

from utils.bitstream.bits import MAX_CODE_BITS, pack_codes, packed_bytes, unpack_codes

MAGIC = b"AD"
VERSION = 2
KIND_CODES = 0
KIND_END = 1

_HEADER = struct.Struct(">2sBBIIIQ4sBBBB")
DECODER_BYTES = 4
HEADER_BYTES = _HEADER.size
CRC_BYTES = 4
_END_PAYLOAD = struct.Struct(">Q")
MAX_FRAMES = 255

assert HEADER_BYTES == 32


class PacketError(ValueError):
    """A packet that is not ours (`foreign`) or is damaged (`corrupt`); `version` is set for a packet of
    this link in another format version."""

    def __init__(self, reason: str, foreign: bool, version: int | None = None) -> None:
        super().__init__(reason)
        self.foreign = foreign
        self.version = version


@dataclasses.dataclass(frozen=True)
class Packet:
    """One parsed packet. `codes` is (streams, n_codebooks, n_frames) int64, or None for END."""

    kind: int
    session: int
    seq: int
    frame_index: int
    capture_us: int
    decoder: bytes
    codes: np.ndarray | None = None
    code_bits: int = 0
    n_samples: int = 0

    @property
    def n_frames(self) -> int:
        return 0 if self.codes is None else self.codes.shape[-1]


def _seal(header: bytes, payload: bytes) -> bytes:
    body = header + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _checked_decoder(decoder: bytes) -> bytes:
    if not isinstance(decoder, bytes) or len(decoder) != DECODER_BYTES:
        raise ValueError(f"decoder is the first {DECODER_BYTES} bytes of StreamingCodec.decoder_hash(), "
                         f"got {decoder!r}")
    return decoder


def encode_codes(codes: np.ndarray, bits: int, session: int, seq: int, frame_index: int, capture_us: int,
                 decoder: bytes) -> bytes:
    """A CODES packet for (streams, K, frames) codes of the decoder `decoder` names (4 bytes)."""
    streams, n_codebooks, n_frames = codes.shape
    if not 1 <= n_frames <= MAX_FRAMES:
        raise ValueError(f"a packet holds 1..{MAX_FRAMES} codec frames, got {n_frames}: use a smaller frame size")
    if codes.min() < 0 or codes.max() >= 1 << bits:
        raise ValueError(f"codes must lie in [0, {1 << bits}) for {bits}-bit codes, got [{codes.min()}, "
                         f"{codes.max()}]: pass the codec's per-codebook indices")
    header = _HEADER.pack(MAGIC, VERSION, KIND_CODES, session, seq, frame_index, capture_us,
                          _checked_decoder(decoder), streams, n_codebooks, bits, n_frames)
    return _seal(header, pack_codes(np.transpose(codes, (2, 0, 1)), bits))


def encode_end(session: int, seq: int, frame_index: int, n_samples: int, decoder: bytes) -> bytes:
    """An END packet: the stream stopped after `frame_index` codec frames holding `n_samples` samples."""
    header = _HEADER.pack(MAGIC, VERSION, KIND_END, session, seq, frame_index, 0, _checked_decoder(decoder),
                          0, 0, 0, 0)
    return _seal(header, _END_PAYLOAD.pack(n_samples))


def decode(data: bytes) -> Packet:
    """Parse and check a datagram; raise PacketError (foreign or corrupt) when it is not a good packet."""
    if len(data) < HEADER_BYTES + CRC_BYTES or data[:2] != MAGIC:
        raise PacketError("not an AudioDec stream packet", foreign=True)
    if data[2] != VERSION:
        raise PacketError(f"packet version {data[2]}, this receiver reads {VERSION}", foreign=True, version=data[2])
    body, (crc,) = data[:-CRC_BYTES], struct.unpack(">I", data[-CRC_BYTES:])
    if zlib.crc32(body) != crc:
        raise PacketError("CRC mismatch", foreign=False)
    _, _, kind, session, seq, frame_index, capture_us, decoder, streams, n_codebooks, bits, n_frames = \
        _HEADER.unpack(body[:HEADER_BYTES])
    payload = body[HEADER_BYTES:]
    if kind == KIND_END:
        if len(payload) != _END_PAYLOAD.size:
            raise PacketError("END packet of the wrong size", foreign=False)
        (n_samples,) = _END_PAYLOAD.unpack(payload)
        return Packet(kind, session, seq, frame_index, capture_us, decoder, n_samples=n_samples)
    if kind != KIND_CODES:
        raise PacketError(f"unknown packet kind {kind}", foreign=True)
    if min(streams, n_codebooks, bits, n_frames) == 0 or bits > MAX_CODE_BITS:
        raise PacketError("CODES packet with an empty or impossible shape", foreign=False)
    count = streams * n_codebooks * n_frames
    if len(payload) != packed_bytes(count, bits):
        raise PacketError("CODES payload of the wrong size", foreign=False)
    codes = np.transpose(unpack_codes(payload, count, bits).reshape(n_frames, streams, n_codebooks), (1, 2, 0))
    return Packet(kind, session, seq, frame_index, capture_us, decoder, codes=codes, code_bits=bits)
