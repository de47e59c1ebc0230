"""`stepforge report RUN` and `stepforge runs [ROOT]`: the page references only files that exist,
every section whose data exists is there, a synthesized-only run gets a report, bad input is one
line; the registry lists runs as a table and as JSON."""
from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import soundfile as sf

from manifests import RunDir
from pipelines.eval_report import aggregate
from tests.conftest import copy_run, stepforge


class Page(HTMLParser):
    """The parts of report.html the tests look at."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.sources, self.headings, self.tables, self.texts = [], [], [], [], []
        self._heading = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag in ("audio", "source") and "src" in attrs:
            self.sources.append(attrs["src"])
        elif tag == "table":
            self.tables.append(0)
        elif tag == "tr":
            self.tables[-1] += 1
        elif tag == "h2":
            self._heading = ""

    def handle_endtag(self, tag):
        if tag == "h2":
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        self.texts.append(data)


def in_process(capsys, *args) -> tuple[int, str, str]:
    from pipelines.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_files(run: Path, page: Page) -> None:
    for src in page.images + page.sources:
        assert not src.startswith(("http:", "https:", "//", "/")), src  # opens from the file system
        path = run / src
        assert path.is_file() and path.stat().st_size > 0, src
    for src in page.sources:
        assert sf.info(run / src).frames > 0, src
    assert page.tables and all(rows > 1 for rows in page.tables)  # rows beyond a header


def reject_some(run: RunDir) -> list[dict]:
    """Turn two verdicts of the filtered run into rejections (same filter hash: a rescore would
    write the same kind of rows)."""
    verdicts = run.verdict_table().to_pylist()
    chosen = [verdicts[0], verdicts[-1]]
    chosen[0].update(accepted=False, reject_reason=f"cer {chosen[0]['cer'] or 0.5:.2f} > 0.35")
    chosen[1].update(accepted=False, reject_reason="ss 0.41 < 0.60")
    run.commit_verdicts(chosen)
    run.consolidate()
    return chosen


def add_student(run: Path, rows: list[dict]) -> None:
    """RUN/student with the logs distill writes (train.json, logs/metrics.jsonl) and RUN/eval/eval.json."""
    logs = run / "student" / "logs"
    logs.mkdir(parents=True)
    lines = [{"step": s, "loss": 8.0 - s / 10, "ce": 8.0 - s / 10, "lr": 1e-3} for s in (10, 20, 30)]
    lines += [{"step": s, "eval_loss": 8.5 - s / 20, "eval_tokens": 100} for s in (20, 30)]
    (logs / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (run / "student" / "train.json").write_text(json.dumps(
        {"status": "done", "step": 30, "wall_s": 12.5, "train_rows": 10, "heldout_rows": 2,
         "exported": {"step": 30}, "last": {**lines[2], "tokens_per_s": 900.0}}))
    eval_rows = [{"lang": r["lang"], "student": {"cer": 0.5, "wer": 0.5 if r["lang"] == "en" else None, "ss": 0.7,
                                                  "accepted": False, "duration_s": 2.0},
                  "teacher": {"cer": r["cer"], "wer": r["wer"], "ss": r["ss"], "accepted": True, "duration_s": 2.5}}
                 for r in rows]
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text(json.dumps(
        {"aggregate": aggregate(eval_rows), "generation": {"tasks": 2, "wall_s": 4.0, "audio_s_per_wall_s": 1.0},
         "ss_model": "resemblyzer-0.1.4"}))


def test_report_of_a_filtered_run_with_a_student(filtered_run, tmp_path, capsys):
    run = copy_run(filtered_run, tmp_path / "run")
    chosen = reject_some(RunDir(run))
    rows = RunDir(run).read_manifest().to_pylist()
    add_student(run, [r for r in rows if r["id"] in {c["id"] for c in chosen}])
    code, out, _ = in_process(capsys, "report", run)
    assert code == 0 and out.strip() == f"report: {run / 'report.html'}"
    html = (run / "report.html").read_text()
    page = Page(html)
    check_files(run, page)
    assert page.headings == ["Run", "Yield per category", "CER/WER and speaker similarity", "Rejection reasons",
                             "Duration distribution", "Throughput per stage", "Training curve",
                             "Student vs teacher", "Listen"]
    assert {"report/yield_heatmap.png", "report/hist_cer.png", "report/hist_ss.png", "report/rejections.png",
            "report/training_curve.png"} <= set(page.images)
    texts = [t.strip() for t in page.texts]
    assert "cer > 0.35" in texts and "ss < 0.60" in texts  # rejection reasons without their figures
    assert "0.35" in texts and "0.9" in texts and "0.6" in texts  # tiny.yaml's max_cer, mandarin's, min_ss
    accepted = sum(1 for r in RunDir(run).read_manifest().to_pylist() if r["accepted"])
    assert accepted <= 10 and f"{accepted} of 12 filtered" in " ".join(texts)
    assert sum(1 for t in texts if t.startswith("rejected: ")) >= 2  # rejected rows can be heard
    assert len(page.sources) >= 8 and "<script" not in html
    # a rerun rebuilds the assets: nothing stale stays
    (run / "report" / "stale.png").write_bytes(b"x")
    assert in_process(capsys, "report", run)[0] == 0
    assert not (run / "report" / "stale.png").exists()


def test_report_of_a_synthesized_only_run(synthesized_run, tmp_path):
    run = copy_run(synthesized_run[0], tmp_path / "run")
    proc = stepforge("report", run)
    assert proc.returncode == 0, proc.stderr
    page = Page((run / "report.html").read_text())
    check_files(run, page)
    assert page.headings == ["Run", "Duration distribution", "Throughput per stage", "Listen"]
    assert len(page.sources) == 8 and sum(1 for t in page.texts if t == "not filtered") == 8


@pytest.mark.parametrize("extra", [[], ["--student", "nowhere"]])
def test_report_bad_input_is_one_line(filtered_run, tmp_path, capsys, extra):
    target = tmp_path if not extra else copy_run(filtered_run, tmp_path / "run")
    code, out, err = in_process(capsys, "report", target, *extra)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("stepforge report: error: ")
    assert not (tmp_path / "report.html").exists()


def test_runs_lists_runs_as_text_and_json(filtered_run, synthesized_run, tmp_path, capsys):
    root = tmp_path / "runs"
    filtered = copy_run(filtered_run, root / "filtered")
    copy_run(synthesized_run[0], root / "nightly" / "synth")
    add_student(filtered, RunDir(filtered).read_manifest().to_pylist()[:2])
    code, out, _ = in_process(capsys, "runs", root)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].split()[:4] == ["run", "stages", "tasks", "accepted"]
    overall = json.loads((filtered / "run.json").read_text())["stages"]["filter"]["yield_summary"]["all"]["all"]
    assert lines[1].split()[:4] == ["filtered", "synthesize,filter,distill,eval", "12/12",
                                    f"{overall['accepted']}/12"]
    assert lines[2].split()[:3] == ["nightly/synth", "synthesize", "12/12"]
    code, out, _ = in_process(capsys, "runs", root, "--json")
    entries = json.loads(out)
    assert [e["name"] for e in entries] == ["filtered", "nightly/synth"]
    assert entries[0]["yield"] == overall["yield"] and entries[0]["student"]["mean_ss"] == 0.7 and entries[1]["student"] is None
    assert all(e["bytes"] > 0 and e["updated"].endswith("Z") for e in entries)
    code, _, err = in_process(capsys, "runs", tmp_path / "missing")
    assert code == 2 and "no such folder" in err


def test_reject_reasons_group_without_figures_and_audio_cells_spread():
    from pipelines.report import reason_kind, spread

    assert reason_kind("cer 0.42 > 0.35") == reason_kind("cer 0.90 > 0.35") == "cer > 0.35"
    assert reason_kind("ss 0.51 < 0.60") == "ss < 0.60" and reason_kind("teacher error: boom") == "teacher error"
    assert reason_kind("shard unreadable at offset 512: no sample there") == "shard unreadable at offset N"
    cells = spread([(e, d) for e in "abc" for d in "xyz"], 3)
    assert {c[0] for c in cells} == set("abc") and {c[1] for c in cells} == set("xyz")
    assert len(spread([(e, d) for e in "abcdefg" for d in range(8)], 12)) == 12


def fake_student(folder: Path, step: int, init: Path | None, losses: list[float], weights: bytes) -> str:
    """A student dir as distill leaves it (config, weights, train.json, held-out curve); returns
    its fingerprint."""
    from manifests.digest import model_dir_fingerprint

    (folder / "logs").mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "step1", "hidden_size": 8}))
    (folder / "model.safetensors").write_bytes(weights)
    every = step // len(losses)
    lines = [{"step": every * (k + 1), "eval_loss": loss} for k, loss in enumerate(losses)]
    (folder / "logs" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    (folder / "train.json").write_text(json.dumps(
        {"status": "done", "step": step, "train_rows": 10 * step, "parameters": 1234,
         "init": str(init.resolve()) if init else None}))
    return model_dir_fingerprint(folder)


def fake_eval(fingerprint: str, wer: float, temperature: float, teacher_side: str = "teacher_eval") -> dict:
    side = {"n": 4, "mean_cer": wer, "mean_wer": wer, "mean_ss": 0.8, "accept_rate": 0.5}
    ci = {"wer": {"n": 4, "student": {"mean": wer, "ci": [wer - 0.1, wer + 0.1]},
                  "teacher": {"mean": 0.2, "ci": [0.1, 0.3]}, "ratio": {"value": wer / 0.2, "ci": [1.0, 9.0]}},
          "teacher_side": teacher_side}
    return {"student": "somewhere/student", "student_fingerprint": fingerprint, "prompts_hash": "p1", "samples": 3,
            "n_prompts": 4, "sampling": {"temperature": temperature}, "created_at": f"t{temperature}",
            "aggregate": {"all": {"student": side}}, "stats": ci}


def test_report_compares_kept_students_and_their_evals(filtered_run, tmp_path, capsys):
    from pipelines.report_compare import comparison_rows, curves, gather

    run = copy_run(filtered_run, tmp_path / "run")
    first = fake_student(run / "students" / "000", 30, None, [5.0, 4.0, 3.5], b"one")
    current = fake_student(run / "student", 20, run / "students" / "000", [3.2, 3.0], b"two")
    (run / "students" / "000" / "eval.json").write_text(json.dumps(fake_eval(first, 0.7, 0.3)))
    (run / "eval").mkdir()
    (run / "eval" / "eval.json").write_text(json.dumps(fake_eval(current, 0.5, 0.3)))
    other = fake_student(tmp_path / "gpu", 40, None, [4.0, 3.1], b"three")
    (tmp_path / "greedy").mkdir()
    (tmp_path / "greedy" / "eval.json").write_text(json.dumps(fake_eval(current, 0.45, 0.0, "teacher")))
    (tmp_path / "lost").mkdir()
    (tmp_path / "lost" / "eval.json").write_text(json.dumps(fake_eval("0" * 12, 0.9, 0.3)))

    students, evals = gather(run, [tmp_path / "gpu", tmp_path / "greedy", tmp_path / "lost"])
    assert [s.label for s in students] == ["000", "student", str(tmp_path / "gpu")]
    assert [s.offset for s in students] == [0, 30, 0]  # the continued student counts from scratch
    assert [len(s.evals) for s in students] == [1, 2, 0] and len(evals) == 4
    assert curves(students)["student"] == [(40, 3.2), (50, 3.0)]
    rows = comparison_rows(students, evals)
    assert [r[0] for r in rows] == ["000", "student", "student", str(tmp_path / "gpu"), "somewhere/student (eval only)"]
    assert rows[1][3] == "30 + 20" and rows[1][4] == "3.000 (50)" and rows[0][4] == "3.500 (30)"
    assert [r[6] for r in rows[:3]] == [0.3, 0.3, 0.0]
    assert rows[2][7] == "0.450 [0.350, 0.550]" and rows[1][9] == "2.500 [1.000, 9.000]"
    assert rows[2][8] == "0.200 [0.100, 0.300] (corpus rows)"  # no teacher in that eval: not the same denominator
    assert rows[3][5:] == ["-"] * 7

    code, _, _ = in_process(capsys, "report", run, "--compare", tmp_path / "gpu", "--compare", tmp_path / "greedy")
    assert code == 0
    page = Page((run / "report.html").read_text())
    check_files(run, page)
    assert "Students compared" in page.headings and "report/students_heldout.png" in page.images
    code, out, err = in_process(capsys, "report", run, "--compare", tmp_path / "nothing")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--compare" in err
