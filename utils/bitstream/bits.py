"""Fixed-width bit packing of codes: the `.adc` raw payload and the UDP packets both use it.

Each code takes `bits_per_code(codebook_size)` bits, most significant bit first, codes back to
back with no alignment, and the last byte zero-padded.
"""

from __future__ import annotations

import numpy as np

MAX_CODE_BITS = 32


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
    bit_matrix = (values[:, None] & _bit_weights(bits)) != 0
    return np.packbits(bit_matrix.reshape(-1)).tobytes()


def unpack_codes(data: bytes | bytearray, count: int, bits: int, bit_offset: int = 0) -> np.ndarray:
    """Inverse of `pack_codes`: `count` integers (int64) starting `bit_offset` bits into `data`."""
    bit_array = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
    bit_array = bit_array[bit_offset : bit_offset + count * bits].astype(np.int64)
    return bit_array.reshape(count, bits) @ _bit_weights(bits)
