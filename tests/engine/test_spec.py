import collections
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import yaml

import engine.speakers
from engine.instructions import DIALECTS, Instruction
from engine.spec import GenerationSpec, SpecError, read_tasks, tasks_to_table, write_tasks
from engine.spec.allocate import largest_remainder
from engine.spec.texts import BUILTIN_TEXTS
from engine.task import Task

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "pipelines" / "configs"
EN = ["The cat sat on the warm mat.", "We walked home in the rain.", "Please open the door for me.",
      "The soup is hot and very tasty.", "My brother likes to read at night.", "The bus was late again today."]
ZH = ["今天的天气非常好。", "我们一起去公园散步吧。", "这碗汤有点太咸了。", "他每天早上都去跑步。"]


def write_spec(tmp_path, data, name="spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def base(**over) -> dict:
    data = {"name": "t", "seed": 5, "count": 40, "texts": [{"file": "en.txt", "lang": "en"}, {"file": "zh.txt"}]}
    data.update(over)
    return data


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "en.txt").write_text("\n".join(EN) + "\n\n", encoding="utf-8")
    (tmp_path / "zh.txt").write_text("\n".join(ZH), encoding="utf-8")
    return tmp_path


def load(tmp_path, data) -> GenerationSpec:
    return GenerationSpec.load(write_spec(tmp_path, data))


def make_speakers(folder: Path, names=("f1", "m1")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        t = np.arange(16000) / 16000
        sf.write(folder / f"{name}.wav", (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), 16000)
        (folder / f"{name}.txt").write_text(f"Prompt number {name}.", encoding="utf-8")
    return folder


def check_tasks(spec: GenerationSpec, tasks: list[Task]) -> None:
    """Invariants every expansion must hold."""
    assert len({t.id for t in tasks}) == len(tasks)
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)
    for t in tasks:
        Instruction.of(t).check_text_language(t.lang)  # valid instruction, language matches dialect
        assert t.text in spec.texts[t.lang]
        assert bool(t.speaker) == bool(t.speaker_wav) == bool(t.speaker_text)


# -- allocation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("total", [1, 7, 100, 333])
def test_largest_remainder_sums_exactly_within_one(total):
    weights = {"a": 0.37, "b": 0.21, "c": 0.0, "d": 1.3, "e": 0.05}
    counts = largest_remainder(weights, total, random.Random(0))
    assert sum(counts.values()) == total and counts["c"] == 0
    norm = sum(weights.values())
    for k, w in weights.items():
        assert abs(counts[k] - total * w / norm) < 1


def test_largest_remainder_ties_follow_the_seed():
    weights = {k: 1 for k in "abcdefgh"}
    picks = {tuple(sorted(k for k, n in largest_remainder(weights, 3, random.Random(s)).items() if n)) for s in range(8)}
    assert len(picks) > 1
    assert largest_remainder(weights, 3, random.Random(4)) == largest_remainder(weights, 3, random.Random(4))


def test_shares_are_respected_per_dimension(texts):
    cats = {
        "emotion": {"neutral": 3, "happy": 1, "sad": 1, "angry": 1},
        "intensity": {1: 1, 3: 1},
        "dialect": {"english": 2, "english-gb": 1, "mandarin": 1, "cantonese": 1},
        "style": {"speech": 8, "rap": 1, "humming": 1},
        "speed": {"slow1": 1, "normal": 2, "fast2": 1},
    }
    spec = load(texts, base(count=97, categories=cats, texts=[{"builtin": ["en", "zh"]}]))
    tasks = spec.expand()
    assert len(tasks) == 97
    check_tasks(spec, tasks)
    for dim, shares in cats.items():
        got = collections.Counter(getattr(t, dim) for t in tasks if dim != "intensity" or t.intensity)
        total = sum(got.values())
        for value, w in shares.items():
            assert abs(got[value] - total * w / sum(shares.values())) < 1, (dim, value, got)


def test_impossible_shares_still_give_valid_tasks(texts, caplog):
    cats = {"emotion": {"neutral": 1, "happy": 4}, "style": {"rap": 1, "speech": 1}, "speed": ["fast1", "normal"]}
    spec = load(texts, base(count=30, categories=cats, texts=[{"builtin": ["en", "zh"]}]))
    tasks = spec.expand()
    assert len(tasks) == 30
    check_tasks(spec, tasks)
    assert {t.emotion for t in tasks if t.style == "rap"} == {"neutral"}
    assert "fell back" in caplog.text


def test_quotas_are_exact_and_the_rest_comes_from_shares(texts):
    quotas = [
        {"emotion": "happy", "intensity": 4, "dialect": "cantonese", "count": 3},
        {"style": "rap", "lang": "en", "speed": "fast1", "count": 5},
        {"emotion": "calm", "intensity": 1, "dialect": "english-scottish", "count": 2},
    ]
    data = base(count=20, quotas=quotas, categories={"emotion": ["sad"], "intensity": [2]},
                texts=[{"builtin": ["en", "zh"]}])
    spec = load(texts, data)
    tasks = spec.expand()
    check_tasks(spec, tasks)
    cells = collections.Counter((t.emotion, t.intensity, t.dialect, t.style, t.speed) for t in tasks)
    assert cells[("happy", 4, "cantonese", "speech", "normal")] == 3
    assert cells[("neutral", 0, "english", "rap", "fast1")] == 5
    assert cells[("calm", 1, "english-scottish", "speech", "normal")] == 2
    assert sum(t.emotion == "sad" for t in tasks) == 10


def test_quotas_alone_set_the_count(texts):
    data = base(quotas=[{"emotion": "sad", "intensity": 2, "lang": "zh", "count": 3}])
    del data["count"]
    tasks = load(texts, data).expand()
    assert [(t.emotion, t.dialect) for t in tasks] == [("sad", "mandarin")] * 3


# -- determinism, dedupe, ids -------------------------------------------------------------------

def test_same_spec_same_ids_and_identical_table(texts, tmp_path):
    data = base(categories={"emotion": ["neutral", "happy"], "dialect": ["english", "mandarin"]})
    a, b = load(texts, data), load(texts, data)
    ta, tb = a.expand(), b.expand()
    assert [t.id for t in ta] == [t.id for t in tb] and a.hash == b.hash
    write_tasks(ta, tmp_path / "a.parquet")
    write_tasks(tb, tmp_path / "b.parquet")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    other = load(texts, {**data, "seed": 6})
    assert [t.id for t in other.expand()] != [t.id for t in ta] and other.hash != a.hash


def test_task_seed_derives_from_spec_seed_and_id(texts):
    tasks = load(texts, base(count=10)).expand()
    assert len({t.seed for t in tasks}) == len(tasks)
    assert all(0 <= t.seed < 2 ** 31 for t in tasks)


def test_duplicates_are_replaced_by_other_texts(texts):
    # 6 English texts, one cell: 6 distinct tasks, never the same text twice.
    tasks = load(texts, base(count=6, texts=[{"file": "en.txt", "lang": "en"}])).expand()
    assert len(tasks) == 6 and len({t.text for t in tasks}) == 6
    # Two cells share the texts: every text is used once per cell.
    data = base(count=12, texts=[{"file": "en.txt", "lang": "en"}], categories={"speed": ["slow1", "fast1"]})
    tasks = load(texts, data).expand()
    assert len(tasks) == 12
    assert collections.Counter(t.text for t in tasks) == {text: 2 for text in EN}


def test_a_text_dealt_twice_to_one_cell_is_skipped(texts):
    # Cells come as A A B B A over three texts: plain round-robin would give the last A a text A
    # already has; dedupe must hand it the third text instead.
    (texts / "three.txt").write_text("First of three lines.\nSecond of three lines.\nThird of three lines.\n")
    a, b = {"emotion": "sad", "intensity": 1, "lang": "en"}, {"emotion": "happy", "intensity": 1, "lang": "en"}
    data = base(texts=[{"file": "three.txt", "lang": "en"}], quotas=[{**a, "count": 2}, {**b, "count": 2}, {**a, "count": 1}])
    del data["count"]
    spec = load(texts, data)
    tasks = spec.expand()
    check_tasks(spec, tasks)
    assert len(tasks) == 5 and len({t.text for t in tasks if t.emotion == "sad"}) == 3


def test_more_tasks_than_distinct_texts_gives_fewer_with_a_warning(texts, caplog):
    (texts / "dups.txt").write_text("Same words here again.\nSame words here again.\nOther words in here.\n")
    tasks = load(texts, base(count=5, texts=[{"file": "dups.txt", "lang": "en"}])).expand()
    assert sorted(t.text for t in tasks) == ["Other words in here.", "Same words here again."]
    assert "3 of 5 tasks" in caplog.text


def test_excluded_tasks_are_dealt_the_next_text(texts, caplog):
    # A grown run re-expands over texts it has voiced: two cells over 6 texts, 6 tasks already in
    # the run; 6 more must be 6 new tasks (not fewer where a draw repeats a task the run has).
    data = base(count=6, texts=[{"file": "en.txt", "lang": "en"}], categories={"speed": ["slow1", "fast1"]})
    old = load(texts, data).expand()
    ids = frozenset(t.id for t in old)
    for seed in range(5):
        spec = load(texts, {**data, "seed": seed})
        assert len(spec.expand()) == 6
        new = spec.expand(exclude=ids)
        assert len(new) == 6 and not ids & {t.id for t in new}
        check_tasks(spec, new)
    # 12 combinations in all: a 7th new task does not exist, and the warning says so
    spec = load(texts, {**data, "count": 7})
    assert len(spec.expand(exclude=ids)) == 6 and "1 of 7 tasks" in caplog.text


# -- sources ------------------------------------------------------------------------------------

def test_jsonl_source_with_row_langs_and_detection(texts):
    rows = [{"text": "Hello there my friend."}, {"text": "你好，朋友。"}, {"text": "안녕하세요 친구", "lang": "ko"},
            {"text": "こんにちは、友達。"}]
    (texts / "rows.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    spec = load(texts, base(count=8, texts=[{"file": "rows.jsonl"}]))
    assert spec.texts == {"en": ["Hello there my friend."], "zh": ["你好，朋友。"], "ko": ["안녕하세요 친구"], "ja": ["こんにちは、友達。"]}
    tasks = spec.expand()
    assert {t.dialect for t in tasks} == {"english", "mandarin", "korean", "japanese"}
    check_tasks(spec, tasks)


def test_txt_source_lang_and_limit(texts):
    spec = load(texts, base(texts=[{"file": "en.txt", "lang": "en", "limit": 2}, {"builtin": "zh", "limit": 3}]))
    assert spec.texts["en"] == EN[:2] and len(spec.texts["zh"]) == 3


def test_datasets_directories(texts):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"sentence": EN[:3], "language": ["en"] * 3}).save_to_disk(str(texts / "saved"))
    spec = load(texts, base(count=3, texts=[{"dataset": "saved", "column": "sentence", "lang_column": "language"}]))
    assert spec.texts == {"en": EN[:3]}
    (texts / "files").mkdir()
    datasets.Dataset.from_dict({"text": ZH}).to_parquet(str(texts / "files" / "train.parquet"))
    spec = load(texts, base(count=4, texts=[{"dataset": "files"}]))
    assert spec.texts == {"zh": ZH} and len(spec.expand()) == 4
    with pytest.raises(SpecError) as e:
        load(texts, base(texts=[{"dataset": "files", "column": "nope"}]))
    assert "texts[0].dataset" in str(e.value) and "no column 'nope'" in str(e.value)


# -- clone ----------------------------------------------------------------------------------------

def test_clone_share_and_prompts(texts):
    make_speakers(texts / "voices")
    spec = load(texts, base(count=50, clone={"speakers": "voices", "share": 0.2}))
    tasks = spec.expand()
    check_tasks(spec, tasks)
    cloned = [t for t in tasks if t.speaker]
    assert len(cloned) == 10
    assert collections.Counter(t.speaker for t in cloned) == {"f1": 5, "m1": 5}
    assert all(t.speaker_wav.endswith(f"{t.speaker}.wav") for t in cloned)
    before = spec.hash
    sf.write(texts / "voices" / "f1.wav", np.full(16000, 0.1, dtype=np.float32), 16000)
    again = load(texts, base(count=50, clone={"speakers": "voices", "share": 0.2}))
    assert again.hash != before
    assert {t.id for t in again.expand() if t.speaker == "m1"} == {t.id for t in cloned if t.speaker == "m1"}


def test_speaker_shares_and_quotas(texts):
    make_speakers(texts / "voices")
    data = base(count=10, clone={"speakers": "voices"}, categories={"speaker": {"none": 1, "m1": 1}},
                quotas=[{"speaker": "f1", "lang": "en", "count": 2}])
    tasks = load(texts, data).expand()
    assert collections.Counter(t.speaker for t in tasks) == {"f1": 2, "m1": 4, "": 4}


# -- the shipped data and configs -----------------------------------------------------------------

@pytest.mark.parametrize("lang, lo, hi", [("en", 5, 20), ("zh", 8, 30)])
def test_builtin_sentences(lang, lo, hi):
    lines = BUILTIN_TEXTS[lang].read_text(encoding="utf-8").split("\n")
    if lines[-1] == "":
        lines.pop()
    assert len(lines) >= 320 and len(set(lines)) == len(lines)
    for line in lines:
        size = len(line.split()) if lang == "en" else len(line)
        assert lo <= size <= hi and line == line.strip() and not re.search(r"\d", line), line
        assert line[-1] in ".!?。！？", line


def test_builtin_basic_sentences_match_their_generator(tmp_path):
    from engine.data import basic_en

    lines = BUILTIN_TEXTS["en-basic"].read_text(encoding="utf-8").splitlines()
    assert lines == basic_en.sentences(), "regenerate with: python -m engine.data.basic_en"
    assert len(set(lines)) == len(lines) == 12000 and len(basic_en.vocabulary(lines)) < 300
    spec_file = tmp_path / "basic.yaml"
    spec_file.write_text("count: 20\ntexts:\n  - builtin: [en-basic]\n    limit: 50\n")
    tasks = GenerationSpec.load(spec_file).expand()
    assert len(tasks) == 20 and {t.lang for t in tasks} == {"en"} and {t.text for t in tasks} <= set(lines[:50])


def test_builtin_config(monkeypatch):
    monkeypatch.setattr(engine.speakers, "BUILTIN_SPEAKERS", make_speakers(Path(pytest.importorskip("tempfile").mkdtemp()) / "sp"))
    spec = GenerationSpec.load(CONFIGS / "builtin.yaml")
    tasks = spec.expand()
    check_tasks(spec, tasks)
    assert len(tasks) == 200
    assert {t.emotion for t in tasks} == {"neutral", "happy", "sad", "angry", "coquettish", "surprised", "calm"}
    assert {t.speed for t in tasks} == {"slow2", "slow1", "normal", "fast1", "fast2"}
    assert {"cantonese", "sichuanese", "english-gb", "english-scottish"} <= {t.dialect for t in tasks}
    assert 0 < sum(t.style == "rap" for t in tasks) < 20 and 0 < sum(t.style == "humming" for t in tasks) < 20
    assert sum(bool(t.speaker) for t in tasks) == 20
    assert {t.lang for t in tasks} == {"en", "zh"}


def test_tiny_config():
    spec = GenerationSpec.load(CONFIGS / "tiny.yaml")
    tasks = spec.expand()
    check_tasks(spec, tasks)
    assert 8 <= len(tasks) <= 16 and {t.lang for t in tasks} == {"en", "zh"} and not any(t.speaker for t in tasks)


def _example_specs() -> list[str]:
    """The shipped generation specs (not distill configs, nor pipeline YAMLs, which hold a spec:)."""
    return sorted(p.name for p in CONFIGS.glob("*.yaml") if p.name != "builtin.yaml"
                  and not p.name.startswith("distill_") and "spec" not in (yaml.safe_load(p.read_text()) or {}))


@pytest.mark.parametrize("name", _example_specs())
def test_every_example_config_expands(name):
    spec = GenerationSpec.load(CONFIGS / name)
    check_tasks(spec, spec.expand())


# -- tasks.parquet --------------------------------------------------------------------------------

def test_parquet_round_trip(texts, tmp_path):
    make_speakers(texts / "voices")
    tasks = load(texts, base(count=12, clone={"speakers": "voices", "share": 0.5})).expand()
    path = write_tasks(tasks, tmp_path / "run" / "tasks.parquet")
    assert read_tasks(path) == tasks
    assert pq.read_schema(path).names == ["id", "text", "lang", "emotion", "intensity", "dialect", "style",
                                          "speed", "speaker", "speaker_wav", "speaker_text", "seed"]
    assert tasks_to_table(tasks).num_rows == 12
    assert [p.name for p in path.parent.iterdir()] == ["tasks.parquet"]  # no temp file left
    with pytest.raises(ValueError, match="missing columns"):
        pq.write_table(tasks_to_table(tasks).drop_columns(["seed"]), tmp_path / "bad.parquet")
        read_tasks(tmp_path / "bad.parquet")


def test_hash_covers_text_content(texts):
    data = base()
    before = load(texts, data).hash
    (texts / "en.txt").write_text("\n".join(EN[:-1]), encoding="utf-8")
    assert load(texts, data).hash != before


def test_import_order_does_not_matter():
    for first, second in (("engine.speakers", "engine.spec"), ("engine.spec", "engine.speakers")):
        code = f"import {first}, {second}; {second}.__name__"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# -- bad input --------------------------------------------------------------------------------------

def expect_error(tmp_path, data, *parts, raw: str | None = None):
    path = tmp_path / "spec.yaml"
    if raw is not None:
        path.write_text(raw, encoding="utf-8")
    else:
        write_spec(tmp_path, data)
    with pytest.raises(SpecError) as e:
        GenerationSpec.load(path).expand()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    for part in parts:
        assert part in msg, (part, msg)


def test_malformed_yaml_gives_the_line(texts):
    expect_error(texts, None, "line 3", "malformed YAML", raw="name: x\ncount: 3\ntexts: : :\nseed: 1\n")


@pytest.mark.parametrize("data, parts", [
    (base(colour="red"), ("colour", "unknown key", "allowed")),
    (base(texts=[{"file": "en.txt", "lang": "en", "column": "x"}]), ("texts[0].column", "unknown key")),
    (base(categories={"mood": {"happy": 1}}), ("categories.mood", "unknown key")),
    (base(categories={"emotion": {"joyful": 1}}), ("categories.emotion", "'joyful'", "allowed: neutral, happy")),
    (base(categories={"speed": {"warp": 1}}), ("categories.speed", "allowed: slow2")),
    (base(categories={"style": {"speech": 0, "rap": 0}}), ("categories.style", "sum to 0")),
    (base(categories={"style": {"speech": -1}}), ("categories.style.speech", ">= 0")),
    (base(count=0), ("count", ">= 1")),
    (base(count="many"), ("count", "integer")),
    ({"count": 3}, ("texts", "missing")),
    (base(texts=[{"file": "nope.txt"}]), ("texts[0].file", "nope.txt", "no such file")),
    (base(texts=[{"file": "en.txt", "lang": "fr"}]), ("texts[0].lang", "'fr'", "allowed: zh, en, ja, ko")),
    (base(texts=[{"file": "en.txt", "dataset": "x"}]), ("texts[0]", "exactly one")),
    (base(quotas=[{"style": "rap", "emotion": "happy", "intensity": 2, "lang": "en", "count": 2}]),
     ("quotas[0]", "rap takes no emotion")),
    (base(texts=[{"file": "en.txt", "lang": "en"}], quotas=[{"dialect": "cantonese", "count": 2}]),
     ("quotas[0].dialect", "cantonese needs zh texts")),
    (base(quotas=[{"count": 2}]), ("quotas[0]", "give dialect or lang")),
    (base(count=3, quotas=[{"lang": "en", "count": 5}]), ("quotas", "more than count 3")),
    (base(count=9, quotas=[{"lang": "en", "count": 5}]), ("count", "quotas sum to 5")),
    (base(texts=[{"file": "en.txt", "lang": "en"}], categories={"dialect": ["mandarin"]}), ("categories.dialect",)),
    (base(clone={"speakers": "missing"}), ("clone.share", "missing")),
    (base(clone={"speakers": "missing", "share": 0.1}), ("clone.speakers", "not found")),
    (base(clone={"speakers": "x", "share": 2}), ("clone.share", "between 0 and 1")),
    (base(categories={"speaker": {"f1": 1}}), ("clone.speakers", "no clone speakers folder")),
])
def test_bad_spec_fields(texts, data, parts):
    expect_error(texts, data, *parts)


def test_bad_text_files(texts):
    (texts / "empty.txt").write_text("\n  \n")
    expect_error(texts, base(texts=[{"file": "empty.txt"}]), "texts[0].file", "empty.txt", "no texts")
    (texts / "latin1.txt").write_bytes("Caf\u00e9 au lait.\n".encode("latin-1"))
    expect_error(texts, base(texts=[{"file": "latin1.txt"}]), "texts[0].file", "latin1.txt", "byte offset 3")
    (texts / "rows.jsonl").write_text('{"text": "fine words here"}\n{"text": ""}\n')
    expect_error(texts, base(texts=[{"file": "rows.jsonl"}]), "texts[0].file", "rows.jsonl: line 2", "empty")
    (texts / "rows.jsonl").write_text('{"text": "fine"}\nnot json\n')
    expect_error(texts, base(texts=[{"file": "rows.jsonl"}]), "rows.jsonl: line 2", "not valid JSON")
    (texts / "greek.txt").write_text("Καλημέρα σας\n", encoding="utf-8")
    expect_error(texts, base(texts=[{"file": "greek.txt"}]), "greek.txt: text 1", "cannot tell the language")


def test_bad_speaker_audio(texts):
    voices = make_speakers(texts / "voices", names=("ok",))
    sf.write(voices / "quiet.wav", np.zeros(16000, dtype=np.float32), 16000)
    (voices / "quiet.txt").write_text("Nothing to hear.")
    expect_error(texts, base(clone={"speakers": "voices", "share": 0.1}), "clone.speakers", "quiet.wav", "silent")
    (voices / "quiet.wav").write_bytes(b"garbage")
    expect_error(texts, base(clone={"speakers": "voices", "share": 0.1}), "clone.speakers", "quiet.wav", "cannot read audio")


def test_instruction_of_every_task_is_valid_for_random_specs(texts):
    rng = random.Random(0)
    for trial in range(5):
        cats = {dim: {v: rng.random() for v in rng.sample(list(values), rng.randint(1, len(values)))}
                for dim, values in (("emotion", ("neutral", "happy", "angry", "calm")), ("style", ("speech", "rap", "humming")),
                                    ("speed", ("slow2", "normal", "fast1")), ("dialect", tuple(DIALECTS)))}
        spec = load(texts, base(seed=trial, count=rng.randint(1, 60), categories=cats))
        tasks = spec.expand()
        check_tasks(spec, tasks)
        assert all(Instruction(*[getattr(t, f) for f in ("emotion", "intensity", "dialect", "style", "speed", "speaker")]) for t in tasks)
