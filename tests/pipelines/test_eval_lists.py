"""seed-tts-eval test lists: parsing (prompt wavs relative to the list) and the per-list figures.

The prompt wav is a real recording: the first 1.2 s of Step-Audio's ``speakers/Tingting_prompt.wav``
(github.com/stepfun-ai/Step-Audio, Apache-2.0), already kept for the codec goldens.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from manifests.errors import UserError
from pipelines.eval_lists import list_figures, read_list, read_lists

TINGTING = Path(__file__).parents[1] / "engine" / "stepaudio" / "goldens" / "prompt" / "tingting_1200ms.wav"
PROMPT_TEXT = "那等我们到海洋馆"  # what the first 1.2 s say


def write_list(folder: Path, lines: list[str], name: str = "meta.lst") -> Path:
    (folder / "wavs").mkdir(exist_ok=True)
    shutil.copy(TINGTING, folder / "wavs" / "tingting.wav")
    path = folder / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_lines_become_clone_tasks_with_wavs_relative_to_the_list(tmp_path):
    path = write_list(tmp_path, [f"u1|{PROMPT_TEXT}|wavs/tingting.wav|我用iPhone拍照。",
                                 "", f"u2|{PROMPT_TEXT}|wavs/tingting.wav|今天天气很好|ground_truth/u2.wav"])
    test = read_list(path)
    assert (test.name, test.lang, [line.utt for line in test.lines]) == ("meta", "zh", ["u1", "u2"])
    task = test.lines[0].prompt.task
    assert task.speaker_wav == str((tmp_path / "wavs" / "tingting.wav").resolve())
    assert (task.text, task.lang, task.dialect, task.speaker, task.speaker_text) == (
        "我用iPhone拍照。", "zh", "mandarin", "tingting", PROMPT_TEXT)
    assert read_list(path).lines[1].prompt.task.id == test.lines[1].prompt.task.id  # deterministic
    assert test.lines[0].prompt.task.id != test.lines[1].prompt.task.id
    assert read_list(f"{path}:en").lang == "en"


def test_names_are_unique_across_lists(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    lists = [write_list(tmp_path / d, [f"u|{PROMPT_TEXT}|wavs/tingting.wav|Hello there."]) for d in "ab"]
    assert [t.name for t in read_lists(lists)] == ["meta", "meta-2"]
    assert read_lists(lists)[0].lang == "en"


@pytest.mark.parametrize("line, problem", [
    ("u1|text|wavs/tingting.wav", "got 3 fields"),
    ("u1|text|wavs/missing.wav|你好", "no such prompt wav"),
    ("u1|text|wavs/tingting.wav|", "empty target_text"),
    ("u1|text|meta.lst|你好", "prompt wav"),  # not audio
])
def test_bad_lines_name_file_and_line(tmp_path, line, problem):
    path = write_list(tmp_path, [f"u0|{PROMPT_TEXT}|wavs/tingting.wav|你好", line])
    with pytest.raises(UserError, match=f"^{path}:2: .*{problem}"):
        read_list(path)


def test_bad_list_files(tmp_path):
    with pytest.raises(UserError, match="cannot read the test list"):
        read_list(tmp_path / "none.lst")
    path = write_list(tmp_path, [f"u|{PROMPT_TEXT}|wavs/tingting.wav|你好"])
    with pytest.raises(UserError, match="unknown list language 'fr'"):
        read_list(f"{path}:fr")
    (tmp_path / "empty.lst").write_text("\n")
    with pytest.raises(UserError, match="no lines"):
        read_list(tmp_path / "empty.lst")


def _row(task, asr_text, cer, ss):
    return {"id": task.id, "lang": task.lang, "text": task.text,
            "student": {"status": "ok", "asr_text": asr_text, "cer": cer, "ss": ss}}


def test_list_figures_are_seed_tts_eval_means_naming_their_normalisation(tmp_path):
    path = write_list(tmp_path, [f"u1|{PROMPT_TEXT}|wavs/tingting.wav|我用iPhone拍照。",
                                 f"u2|{PROMPT_TEXT}|wavs/tingting.wav|今天天气很好",
                                 f"u3|{PROMPT_TEXT}|wavs/tingting.wav|这是测试"])
    test = read_list(path)
    t1, t2, t3 = (line.prompt.task for line in test.lines)
    # u1: the script keeps Chinese case (1 of 10 characters wrong), the filters' normalisation does not;
    # u3 was not transcribed (a failed generation): unscored, as seed-tts-eval skips a missing wav
    rows = [_row(t1, "我用iphone拍照", 0.0, 0.5), _row(t2, "今天天汽很好", 1 / 6, 0.7), _row(t3, None, None, None)]
    block = list_figures(test, rows)
    assert block["cer"] == pytest.approx((0.1 + 1 / 6) / 2, abs=1e-6) and block["n_cer"] == 2
    assert block["normalisation"] == "seed-tts-eval"
    assert block["stepforge"] == {"cer": pytest.approx(1 / 12, abs=1e-6), "n_cer": 2, "normalisation": "stepforge"}
    assert block["ss"] == pytest.approx(0.6) and block["n_ss"] == 2
    assert (block["lines"], block["utterances"], block["lang"]) == (3, 3, "zh")
    assert [u["utt"] for u in block["rows"]] == ["u1", "u2", "u3"] and block["rows"][2]["cer"] is None


def test_inputs_are_the_prompts_file_then_each_lists_new_tasks(tmp_path):
    import json

    from pipelines.eval_lists import format_lists, lists_report, read_inputs

    path = write_list(tmp_path, [f"u1|{PROMPT_TEXT}|wavs/tingting.wav|今天天气很好"])
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "a1", "text": "Hello.", "lang": "en", "dialect": "english"}) + "\n")
    records, skipped, tests = read_inputs(prompts, [path, path])  # the same list twice: its task once
    assert [p.task.id for p in records] == ["a1", tests[0].lines[0].prompt.task.id] and skipped == 0
    assert [t.name for t in tests] == ["meta", "meta-2"]
    assert read_inputs(None, [path])[0] == tests[0].prompts()
    with pytest.raises(UserError, match="nothing to evaluate"):
        read_inputs(None, [])
    task = tests[0].lines[0].prompt.task
    text = format_lists(lists_report(tests[:1], [_row(task, "今天天气很好", 0.0, 0.8)]))
    assert text == "list meta (zh, 1 utterances): CER 0.000% (seed-tts-eval; stepforge 0.000%), SS 0.800"


def test_pipeline_yaml_eval_lists(tmp_path):
    from types import SimpleNamespace

    from pipelines.pipeline_config import load_pipeline
    from pipelines.runner import Eval

    lst = write_list(tmp_path, [f"u1|{PROMPT_TEXT}|wavs/tingting.wav|今天天气很好"])
    spec = Path(__file__).parents[2] / "pipelines" / "configs" / "tiny.yaml"
    good = tmp_path / "good.yaml"
    good.write_text(f"spec: {spec}\neval:\n  lists: [meta.lst, 'meta.lst:en']\n")
    assert load_pipeline(good).eval["lists"] == [str(lst), f"{lst}:en"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"spec: {spec}\neval:\n  lists: [none.lst, 'meta.lst:xx', 3]\n")
    with pytest.raises(UserError) as exc:
        load_pipeline(bad)
    assert str(exc.value).splitlines() == [
        f"{bad}: eval.lists: no such file {tmp_path / 'none.lst'}",
        f"{bad}: eval.lists: {tmp_path / 'meta.lst:xx'}: unknown list language 'xx' (choose zh, en, ja, ko)",
        f"{bad}: eval.lists: expected test list paths (FILE.lst or FILE.lst:LANG), got 3"]
    # a changed list changes what the eval stage consumed (its fingerprint: it reruns)
    ctx = SimpleNamespace(pipeline=load_pipeline(good), student=tmp_path / "student")
    before = Eval.consumed(ctx)
    lst.write_text(lst.read_text() + f"u2|{PROMPT_TEXT}|wavs/tingting.wav|你好\n", encoding="utf-8")
    assert Eval.consumed(ctx) != before and "lists" in Eval.config(ctx)
