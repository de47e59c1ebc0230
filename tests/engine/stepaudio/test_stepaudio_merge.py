"""The 2:3 vq02/vq06 merge vs upstream's (goldens/make_vq06.py), its inverse and the decoder stream."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.stepaudio.merge import decoder_tokens, from_decoder_tokens, merge, split
from manifests.errors import UserError

GOLDENS = Path(__file__).resolve().parent / "goldens" / "vq06"
CASES = ["m37x50", "m4x6", "m10x3", "m1x2", "m0x9"]


@pytest.mark.parametrize("case", CASES)
def test_merge_matches_upstream(case):
    vq02, vq06 = (np.load(GOLDENS / f"merge_{case}_{k}.npy") for k in ("vq02", "vq06"))
    ids = merge(vq02, vq06)
    ref = np.load(GOLDENS / f"merge_{case}.npy")
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref)
    groups = min(len(vq02) // 2, len(vq06) // 3)
    assert len(ids) == 5 * groups
    a, b = split(ids)
    np.testing.assert_array_equal(a, vq02[: 2 * groups])
    np.testing.assert_array_equal(b, vq06[: 3 * groups])


def test_layout_example_and_decoder_stream():
    ids = merge([1, 2, 3, 4], [10, 11, 12, 13, 14, 15])
    assert ids.tolist() == [65537, 65538, 66570, 66571, 66572, 65539, 65540, 66573, 66574, 66575]
    tokens = decoder_tokens(ids)
    assert tokens.tolist() == [1, 2, 1034, 1035, 1036, 3, 4, 1037, 1038, 1039]
    np.testing.assert_array_equal(from_decoder_tokens(tokens), ids)
    # generated ids are decoded as they come: the 2:3 order is not required
    assert decoder_tokens([66560, 65536, 70655]).tolist() == [1024, 0, 5119]


def test_bad_codes_and_ids():
    with pytest.raises(UserError, match="vq06 code 4096 at position 2"):
        merge([0, 1], [0, 1, 4096])
    with pytest.raises(UserError, match="vq02 code -1"):
        merge([-1, 1], [0, 1, 2])
    with pytest.raises(UserError, match="id 3 at position 1 is not an audio id"):
        decoder_tokens([65536, 3])
    with pytest.raises(UserError, match="token 5120 at position 0"):
        from_decoder_tokens([5120])
    with pytest.raises(UserError, match="not a vq02 id"):
        split([66560, 65536, 66560, 66560, 66560])
    with pytest.raises(UserError, match="whole number"):
        split([65536, 65536, 66560])
