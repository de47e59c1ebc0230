import numpy as np
import pytest

from engine.tokens import (
    STEP_AUDIO, TokenLayout, check_audio_ids, deinterleave, duration_seconds, from_audio_string,
    interleave, to_audio_string,
)


def test_layout_matches_step_audio():
    assert (STEP_AUDIO.vq02_offset, STEP_AUDIO.vq06_offset, STEP_AUDIO.vocab_size) == (65536, 66560, 74752)
    assert STEP_AUDIO.audio_end == 70656


def test_interleave_reference_example():
    assert interleave([1, 2, 3, 4], [10, 11, 12, 13, 14, 15]) == [
        65537, 65538, 66570, 66571, 66572, 65539, 65540, 66573, 66574, 66575]


@pytest.mark.parametrize("n02,n06", [(0, 0), (1, 3), (2, 2), (5, 7), (8, 12), (10, 9), (40, 61)])
def test_remainder_dropped_and_round_trip(n02, n06):
    rng = np.random.default_rng(n02 * 100 + n06)
    vq02, vq06 = rng.integers(0, 1024, n02), rng.integers(0, 4096, n06)
    ids = interleave(vq02, vq06)
    groups = min(n02 // 2, n06 // 3)
    assert len(ids) == 5 * groups
    a, b = deinterleave(ids)
    assert a == vq02[: 2 * groups].tolist() and b == vq06[: 3 * groups].tolist()
    assert from_audio_string(to_audio_string(ids)) == ids


def test_audio_string_numbering():
    ids = interleave([0, 1023], [0, 1, 4095])
    assert to_audio_string(ids) == "<audio_0><audio_1023><audio_1024><audio_1025><audio_5119>"


@pytest.mark.parametrize("ids,position", [
    ([65537, 66570, 66571, 66572, 66573], 1),          # vq06 where vq02 belongs
    ([65537, 65538, 65539, 66571, 66572], 2),          # vq02 where vq06 belongs
    ([65537, 65538, 66570, 66571, 70656], 4),          # past the audio range
    ([12, 65538, 66570, 66571, 66572], 0),             # a text id
])
def test_broken_pattern_names_position(ids, position):
    with pytest.raises(ValueError, match=f"position {position}"):
        deinterleave(ids)


def test_partial_group_and_bad_codes_rejected():
    with pytest.raises(ValueError, match="whole number"):
        check_audio_ids([65537, 65538, 66570])
    with pytest.raises(ValueError, match="vq02 code 1024 at position 1"):
        interleave([3, 1024], [1, 2, 3])
    with pytest.raises(ValueError, match="character 0"):
        from_audio_string("hello<audio_1>")


def test_compact_text_layout_keeps_audio_meaning():
    compact = TokenLayout(text_size=256, vocab_size=256 + 1024 + 4096 + 8)
    ids = interleave([5, 6], [7, 8, 9], layout=compact)
    assert ids[0] == 256 + 5 and ids[2] == 256 + 1024 + 7
    assert deinterleave(ids, layout=compact) == ([5, 6], [7, 8, 9])
    with pytest.raises(ValueError):
        TokenLayout(text_size=256, vocab_size=1000)


def test_duration():
    assert duration_seconds(5) == pytest.approx(0.12)
    assert duration_seconds(5 * 25) == pytest.approx(3.0)
