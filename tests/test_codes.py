import numpy as np
import pytest
from helpers import brute_force_distances, make_codes

from retrieval.codes import (
    check_bits,
    check_codes,
    hamming_distances,
    pack,
    unpack,
)


@pytest.mark.parametrize("bits", [16, 24, 64, 72, 128, 256])
def test_hamming_distances_match_bitwise_oracle(bits):
    codes = make_codes(300, bits, "degenerate")
    queries = make_codes(20, bits, "random", seed=5)
    assert np.array_equal(hamming_distances(queries, codes), brute_force_distances(queries, codes))


def test_pack_unpack_round_trip():
    bits = np.random.default_rng(0).random((10, 64)) > 0.5
    codes = pack(bits)
    assert codes.dtype == np.uint8 and codes.shape == (10, 8)
    assert np.array_equal(unpack(codes, 64), bits)


@pytest.mark.parametrize("bits", [0, 8, 12, 264, 65])
def test_bad_bit_counts_are_rejected(bits):
    with pytest.raises(ValueError, match="multiple of 8"):
        check_bits(bits)


def test_codes_of_wrong_dtype_or_shape_are_rejected():
    with pytest.raises(TypeError, match="uint8"):
        check_codes(np.zeros((2, 8), np.int64), 64)
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        check_codes(np.zeros((2, 4), np.uint8), 64)
    assert check_codes(np.zeros(8, np.uint8), 64).shape == (1, 8)
