"""The packaged multilingual Whisper base: parts joined once, incomplete models refused, Chinese CER."""
from __future__ import annotations

import pytest

from engine.errors import MissingModel
from filter_speech import speak
from filters.asr import DEFAULT_ASR, ASRRouter
from filters.cer import CERFilter
from filters.whisper_packages import check_complete, packaged_dir

ZH = "我们先休息一下，吃完午饭再继续。"  # one that Whisper base reads from eSpeak (most it cannot)


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    return packaged_dir("base", str(tmp_path_factory.mktemp("whisper")))


def test_parts_are_joined_once_into_a_complete_model(joined):
    assert sorted(p.name for p in joined.iterdir()) == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    check_complete(joined / "model.bin")
    before = (joined / "model.bin").stat()
    assert packaged_dir("base", str(joined.parent)) == joined
    after = (joined / "model.bin").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten
    assert [p.name for p in joined.parent.iterdir()] == [joined.name]  # no temporaries left


def test_a_missing_part_is_refused_by_name(joined, tmp_path):
    cut = tmp_path / "model.bin"
    with open(joined / "model.bin", "rb") as src:
        cut.write_bytes(src.read(72608766))  # part 1 alone
    with pytest.raises(MissingModel, match="incomplete.*a part of the split model is missing"):
        check_complete(cut)
    cut.write_bytes(cut.read_bytes()[:40])  # ends inside a header
    with pytest.raises(MissingModel, match="incomplete"):
        check_complete(cut)


def test_default_router_reads_chinese_japanese_korean_with_one_model():
    router = ASRRouter(dict(DEFAULT_ASR))
    router.load()
    assert router.get("en").name == "faster-whisper:tiny.en"
    assert router.get("zh") is router.get("ja") is router.get("ko")
    assert router.get("zh").name == "faster-whisper:base"
    f = CERFilter(router, max_cer=0.35)
    right, wrong, yue = f([
        {"text": ZH, "lang": "zh", "dialect": "mandarin", "style": "speech", "audio": speak(ZH, "cmn", 130)},
        {"text": "他每天上班之前都会绕着湖跑一圈。", "lang": "zh", "dialect": "mandarin", "style": "speech",
         "audio": speak(ZH, "cmn", 130)},
        {"text": ZH, "lang": "zh", "dialect": "cantonese", "style": "speech", "audio": speak(ZH, "yue", 130)},
    ])
    assert right.keep and right.scores["cer"] <= 0.35 and right.scores["asr_model"] == "faster-whisper:base"
    assert not wrong.keep and wrong.scores["cer"] > 0.8
    assert yue.keep and yue.scores["cer"] is None and yue.scores["quality_flags"] == ["unscored_cer"]
