"""Fixed-width bit packing of codes: the `.adc` raw payload and the UDP packets both use it.

Each code takes `bits_per_code(codebook_size)` bits, most significant bit first, codes back to
back with no alignment, and the last byte zero-padded.
"""

from __future__ import annotations

import numpy as np

MAX_CODE_BITS = 32
# Codes (un)packed at a time: a whole file's bit matrix would take 8 bytes per bit (368 MB for an
# hour of 8 x 10-bit codes). A multiple of 8, so that a piece packs to whole bytes.
PIECE = 1 << 16


def bits_per_code(codebook_size: int) -> int:
    """Bits one code takes: ceil(log2(codebook_size)), at least 1."""
    return max(1, (codebook_size - 1).bit_length())


def packed_bytes(count: int, bits: int) -> int:
    """Bytes that `count` codes of `bits` bits take once packed (the last one zero-padded)."""
    return -(-count * bits // 8)


def _bit_weights(bits: int) -> np.ndarray:
    return np.left_shift(np.int64(1), np.arange(bits - 1, -1, -1, dtype=np.int64))


def pack_codes(values: np.ndarray, bits: int) -> bytes:
    """Pack integers in [0, 2**bits), flattened in C order, at `bits` bits each, MSB first, zero-padded."""
    values = np.asarray(values, dtype=np.int64).reshape(-1)
    weights = _bit_weights(bits)
    # PIECE codes take whole bytes, so the pieces' bytes joined are the whole array's
    return b"".join(np.packbits(((values[start : start + PIECE, None] & weights) != 0).reshape(-1)).tobytes()
                    for start in range(0, len(values), PIECE))


def unpack_codes(data: bytes | bytearray, count: int, bits: int, bit_offset: int = 0) -> np.ndarray:
    """Inverse of `pack_codes`: `count` integers (int64) starting `bit_offset` bits into `data`."""
    packed = np.frombuffer(data, dtype=np.uint8)
    weights = _bit_weights(bits)
    codes = np.empty(count, dtype=np.int64)
    for start in range(0, count, PIECE):
        n = min(PIECE, count - start)
        first = bit_offset + start * bits  # the piece's first bit
        unpacked = np.unpackbits(packed[first // 8 : -(-(first + n * bits) // 8)])
        piece_bits = unpacked[first % 8 : first % 8 + n * bits]
        codes[start : start + n] = piece_bits.reshape(n, bits).astype(np.int64) @ weights
    return codes
