"""Packed binary codes: packing, validation and brute-force Hamming distances.

A code of ``bits`` bits is stored as ``bits // 8`` uint8 bytes (``np.packbits`` order), which
is exactly the layout FAISS ``IndexBinary*`` takes.
"""

from __future__ import annotations

import numpy as np

MIN_BITS, MAX_BITS = 16, 256


def check_bits(bits: int) -> int:
    """Validate a code length: a multiple of 8 between 16 and 256."""
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise TypeError(f"bits must be an integer, got {type(bits).__name__}")
    if bits % 8 or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(
            f"bits={bits} is not supported; pass a multiple of 8 between {MIN_BITS} and {MAX_BITS}"
        )
    return int(bits)


def check_codes(codes: np.ndarray, bits: int, name: str = "codes") -> np.ndarray:
    """Return ``codes`` as a C-contiguous uint8 array of shape (n, bits // 8), or raise."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise TypeError(f"{name} must be packed uint8 (np.packbits), got dtype {codes.dtype}")
    if codes.ndim == 1 and codes.shape[0] == bits // 8:
        codes = codes[None, :]
    if codes.ndim != 2 or codes.shape[1] != bits // 8:
        raise ValueError(
            f"{name} must have shape (n, {bits // 8}) for {bits}-bit codes, got {codes.shape}"
        )
    return np.ascontiguousarray(codes)


def pack(bits_array: np.ndarray) -> np.ndarray:
    """Pack a boolean (or 0/1, or signed) array of shape (n, bits) into uint8 codes."""
    return np.packbits(np.asarray(bits_array) > 0, axis=1)


def unpack(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unpack uint8 codes to a (n, bits) uint8 array of 0/1."""
    return np.unpackbits(codes, axis=1, count=bits)


def _as_words(codes: np.ndarray) -> np.ndarray:
    """View packed codes as uint64 words (padding with zero bytes to a multiple of 8)."""
    n, nbytes = codes.shape
    pad = (-nbytes) % 8
    if pad:
        codes = np.concatenate([codes, np.zeros((n, pad), np.uint8)], axis=1)
    return np.ascontiguousarray(codes).view(np.uint64)


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Exact Hamming distances between every query and every code: int32 (nq, n).

    A brute-force reference: memory is nq * n * words, so call it in blocks for large inputs.
    """
    q, c = _as_words(queries), _as_words(codes)
    out = np.zeros((q.shape[0], c.shape[0]), np.int32)
    for w in range(q.shape[1]):
        out += np.bitwise_count(q[:, w, None] ^ c[None, :, w]).astype(np.int32)
    return out
