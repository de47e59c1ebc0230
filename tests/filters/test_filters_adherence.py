"""AdherenceFilter on reference-teacher renderings: correct rows pass, swapped labels are rejected
with the check's reason, disabled checks leave their columns null."""
from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.task import Task
from engine.teachers.reference import ReferenceTeacher
from filters.adherence import COLUMNS, AdherenceFilter, adherence_settings, voice_baselines
from filters.config import FilterConfig
from filters.summary import format_yield, yield_summary
from manifests.errors import UserError
from manifests.schema import FILTER_SCHEMA, manifest_table

ZH = "请记得出门之前把窗户关好。"
EN = "Please remember to close the window before you leave the house."
NO_ASR = {"lang": None, "humming": {"max_words": None}}  # the checks that need no Whisper


def _task(seed: int, **kw) -> Task:
    lang = "en" if kw.get("dialect", "").startswith("english") else "zh"
    return Task(id=f"t{seed}", text=EN if lang == "en" else ZH, lang=lang, seed=seed, **kw)


@pytest.fixture(scope="module")
def rendered():
    """{name: row}: the audio as a run stores it (codec-decoded) plus the teacher's rendering."""
    teacher = ReferenceTeacher()
    made = {"neutral": dict(), "neutral2": dict(), "happy3": dict(emotion="happy", intensity=3),
            "sad3": dict(emotion="sad", intensity=3), "fast1": dict(speed="fast1"),
            "slow1": dict(speed="slow1"), "rap": dict(style="rap"), "humming": dict(style="humming"),
            "english": dict(dialect="english")}
    rows = {}
    for seed, (name, kw) in enumerate(made.items()):
        task = _task(seed, **kw)
        [out] = teacher.synthesize([task])
        rows[name] = {**task.to_row(), "audio": teacher.codec.detokenize(out.tokens), "source_audio": out.source_audio}
    return rows


def _relabel(row: dict, **kw) -> dict:
    labels = dataclasses.asdict(_task(0, **kw))
    return {**row, **{k: labels[k] for k in ("lang", "dialect", "emotion", "intensity", "speed", "style")}}


@pytest.fixture(scope="module")
def baselines(rendered):
    return voice_baselines([rendered["neutral"], rendered["neutral2"], rendered["happy3"]])


def test_baseline_comes_from_neutral_normal_rows_per_voice(baselines):
    assert set(baselines) == {"|mandarin"}
    assert baselines["|mandarin"]["rows"] == 2  # happy3 is not a baseline row
    assert baselines["|mandarin"]["spu"] > 0


def test_correct_rows_pass(rendered, baselines):
    f = AdherenceFilter(NO_ASR, baselines=baselines)
    names = ["neutral", "happy3", "sad3", "fast1", "slow1", "rap", "humming"]
    verdicts = f([rendered[n] for n in names])
    assert [(n, v.reason) for n, v in zip(names, verdicts) if not v.keep] == []
    by = dict(zip(names, verdicts))
    assert by["happy3"].scores["adherence_emotion"] > 0 and by["sad3"].scores["adherence_emotion"] > 0
    assert by["fast1"].scores["adherence_rate"] > 1 > by["slow1"].scores["adherence_rate"]
    assert by["neutral"].scores["adherence_ok"] is True and by["neutral"].scores["adherence_reason"] == ""
    assert "dialect_unverified" not in (by["neutral"].scores.get("quality_flags") or [])  # lang check off


def test_swapped_labels_are_rejected_with_the_reason(rendered, baselines):
    f = AdherenceFilter(NO_ASR, baselines=baselines)
    swapped = {
        "emotion: happy3": _relabel(rendered["sad3"], emotion="happy", intensity=3),
        "emotion: sad3": _relabel(rendered["happy3"], emotion="sad", intensity=3),
        "speed: slow1": _relabel(rendered["fast1"], speed="slow1"),
        "speed: fast1": _relabel(rendered["slow1"], speed="fast1"),
        "humming: voiced": _relabel(rendered["neutral"], style="humming"),
    }
    for expected, v in zip(swapped, f(list(swapped.values()))):
        assert not v.keep and v.reason.startswith("adherence ") and expected in v.reason, (expected, v.reason)
        assert v.scores["adherence_ok"] is False and expected in v.scores["adherence_reason"]


def test_without_a_voice_baseline_emotion_and_speed_stay_unscored(rendered):
    [v] = AdherenceFilter(NO_ASR)([_relabel(rendered["sad3"], emotion="happy", intensity=3)])
    assert v.keep and v.scores["adherence_emotion"] is None
    assert "no_voice_baseline" in v.scores["quality_flags"]


def test_disabled_checks_leave_null_columns(rendered, baselines):
    off = {c: None for c in ("lang", "emotion", "speed", "rap", "humming")}
    rows = [rendered[n] for n in ("happy3", "fast1", "rap", "humming")]
    for v in AdherenceFilter(off, baselines=baselines)(rows):
        assert v.keep and all(v.scores[c] is None for c in COLUMNS if c not in ("adherence_ok", "adherence_reason"))


def test_language_id_rejects_another_language_and_flags_unverified_dialects(rendered, router):
    f = AdherenceFilter({"emotion": None, "speed": None, "rap": None, "humming": None}, router=router)
    zh_as_en = _relabel(rendered["neutral"], dialect="english")
    en_as_zh = _relabel(rendered["english"], dialect="mandarin")
    vouched = {**rendered["english"], "cer": 0.05}  # the CER filter already heard its text
    v_zh_en, v_en_zh, v_en, v_vouched = f([zh_as_en, en_as_zh, rendered["english"], vouched])
    assert not v_zh_en.keep and "lang: spoken zh" in v_zh_en.reason
    assert not v_en_zh.keep and "lang: spoken en" in v_en_zh.reason and "cannot tell Chinese dialects" in v_en_zh.reason
    assert "dialect_unverified" in v_en_zh.scores["quality_flags"]
    assert v_en.keep and v_en.scores["adherence_lang"] == "en" and v_en.scores["adherence_lang_prob"] > 0.5
    assert v_vouched.keep and v_vouched.scores["adherence_lang"] is None  # no second detection


def test_config_validates_and_orders_the_chain():
    chain = FilterConfig().build_chain()
    names = [f.name for f in chain]
    assert names == ["quality", "cer", "speaker", "adherence", "dnsmos"]
    assert chain[3].router is chain[1].router  # one Whisper per actor, shared with the CER filter
    assert "adherence" not in [f.name for f in FilterConfig.from_dict({"adherence": None}).build_chain()]
    assert adherence_settings({"rap": None, "emotion": {"tolerance_st": 2}})["emotion"]["tolerance_st"] == 2
    with pytest.raises(UserError, match="unknown check 'tempo'"):
        FilterConfig.from_dict({"adherence": {"tempo": {}}})
    with pytest.raises(UserError, match="adherence.rap: unknown key 'max_cv'"):
        FilterConfig.from_dict({"adherence": {"rap": {"max_cv": 1}}})


def test_yield_table_has_a_line_per_check_and_old_verdicts_load(tmp_path):
    rows = [{"id": "a", "speaker": "", "lang": "zh", "dialect": "mandarin", "emotion": "happy", "style": "speech",
             "speed": "normal", "accepted": False, "adherence_ok": False, "adherence_reason": "emotion: happy3: ..."},
            {"id": "b", "speaker": "", "lang": "zh", "dialect": "mandarin", "emotion": "neutral", "style": "speech",
             "speed": "fast1", "accepted": True, "adherence_ok": True, "adherence_reason": ""}]
    text = format_yield(yield_summary(manifest_table(rows)))
    assert "adherence=emotion" in text and "adherence=speed" in text
    line = next(s for s in text.splitlines() if s.startswith("adherence=emotion"))
    assert line.split()[1] == "1/2"
    # verdicts journalled before the adherence columns existed load with nulls
    legacy = pa.schema([f for f in FILTER_SCHEMA if not f.name.startswith("adherence_")])
    pq.write_table(manifest_table([{"id": "a", "attempt": 0, "accepted": True}], legacy), tmp_path / "v.parquet")
    table = pq.read_table(tmp_path / "v.parquet", schema=FILTER_SCHEMA)
    assert table.column("adherence_ok").to_pylist() == [None]
    assert "adherence" not in yield_summary(manifest_table([{**rows[1], "adherence_ok": None}]))
