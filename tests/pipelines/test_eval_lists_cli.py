"""End to end: `stepforge eval STUDENT --list meta.lst` on a tiny random Step1 student: each list
line is a clone task whose prompt wav is a real recording (1.2 s of Step-Audio's
``speakers/Tingting_prompt.wav``, Apache-2.0), and eval.json gives the list's seed-tts-eval figures."""
from __future__ import annotations

import json

import pytest

from filters.seedtts import seed_tts_error_rate
from pipelines.cli import main
from tests.conftest import stepforge
from tests.pipelines.test_eval_lists import PROMPT_TEXT, write_list

pytestmark = pytest.mark.slow
MAX_SECONDS = 1.5


@pytest.fixture(scope="module")
def listed(tmp_path_factory):
    """(the eval process, EVAL dir, list path, student dir)."""
    from engine.models import build_student, export

    root = tmp_path_factory.mktemp("evallist")
    student = export(build_student("step1", "tiny", seed=0), root / "student")
    lst = write_list(root, [f"utt_1|{PROMPT_TEXT}|wavs/tingting.wav|我用iPhone拍照。",
                            f"utt_2|{PROMPT_TEXT}|wavs/tingting.wav|今天天气很好"])
    out = root / "eval"
    proc = stepforge("eval", student, "--list", lst, "--out", out, "--max-seconds", MAX_SECONDS,
                     "--no-progress", check=True)
    return proc, out, lst, student


def test_list_figures_in_eval_json(listed):
    proc, out, lst, _ = listed
    report = json.loads((out / "eval.json").read_text())
    block = report["lists"]["meta"]
    assert (block["path"], block["lang"], block["lines"], block["utterances"]) == (str(lst), "zh", 2, 2)
    assert report["n_prompts"] == 2 and report["prompts"] is None
    rows = {r["id"]: r for r in report["rows"]}
    for utt in block["rows"]:
        row = rows[utt["id"]]
        assert row["speaker"] == "tingting" and row["student"]["ss_ref"] == "prompt"
        assert utt["cer"] == pytest.approx(seed_tts_error_rate(row["text"], row["student"]["asr_text"], "zh"))
        assert utt["cer_stepforge"] == pytest.approx(row["student"]["cer"], abs=1e-4)
    rates = [u["cer"] for u in block["rows"]]
    assert block["cer"] == pytest.approx(sum(rates) / 2, abs=1e-6) and block["n_cer"] == 2
    assert block["normalisation"] == "seed-tts-eval" and block["stepforge"]["normalisation"] == "stepforge"
    assert report["normalisation"]["aggregate"] == "stepforge"
    assert "list meta (zh, 2 utterances): CER" in proc.stdout
    info = json.loads((out / "run.json").read_text())
    assert info["lists"] == [f"{lst}:zh"]


def test_bad_lists_exit_2(listed, tmp_path, capsys):
    _, _, lst, student = listed
    assert main(["eval", str(student), "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    assert "give a prompts file (--prompts) and/or test lists (--list)" in capsys.readouterr().err
    assert main(["eval", str(student), "--list", str(tmp_path / "none.lst"), "--out", str(tmp_path / "e")]) == 2
    assert "cannot read the test list" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
