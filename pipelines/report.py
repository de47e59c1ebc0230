"""The run report: RUN/report.html, one self-contained page a person opens from the file system.

    from pipelines.report import write_report
    path = write_report("runs/demo")          # RUN/report.html + RUN/report/*.png + RUN/report/audio/*.wav

Each section appears only when its data exists: the yield per category cell (a heatmap), CER/WER
and SS histograms per dialect with the thresholds marked, rejection reasons, the duration
distribution, throughput per stage (run.json, train.json, eval.json), the training curve of
``RUN/student`` (logs/metrics.jsonl), the student-vs-teacher table per language (eval.json), and
audio players with a few accepted and rejected utterances per cell. Plots are matplotlib PNGs,
audio is 16-bit WAV copied out of the shards; nothing is fetched over a network.
"""
from __future__ import annotations

import html
import io
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from filters import CERFilter
from manifests import RunDir, read_sample, sample_key
from manifests.atomic import atomic_path
from manifests.errors import UserError
from pipelines.eval_stats import fmt_ci
from pipelines.filter_job import load_config
from pipelines.report_compare import HEADER as COMPARE_HEADER
from pipelines.report_compare import comparison_rows, curves, gather, read_json, read_metrics
from pipelines.report_plots import bar_chart, duration_plot, heatmap, heldout_curves, histograms, training_curve

CELL_DIMS = ("emotion", "dialect", "style", "speed", "lang")
SAMPLES_PER_SIDE = 2   # accepted and rejected utterances per cell
MAX_AUDIO_CELLS = 12

CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1180px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}img{max-width:100%;border:1px solid #eee}
.note{color:#666;font-size:.9em}.clip{display:inline-block;margin:.3em;padding:.4em;border:1px solid #ddd;
border-radius:4px;width:270px;vertical-align:top;font-size:.85em}.ok{color:#176}.bad{color:#a22}
audio{width:100%}"""


def esc(value) -> str:
    return html.escape("-" if value is None else str(value))


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: list | None, rows: list[list], left: int = 1) -> str:
    """An HTML table (no header row when ``header`` is None); the first ``left`` columns are
    left-aligned text. Every cell is escaped."""
    def cells(row, tag):
        return "".join(f"<{tag}{' class=l' if i < left else ''}>{esc(v)}</{tag}>" for i, v in enumerate(row))
    head = f"<tr>{cells(header, 'th')}</tr>" if header else ""
    body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


class Report:
    """Collects a run's data and writes the page; :func:`write_report` is the entry point."""

    def __init__(self, run: RunDir, student: Path | None, eval_json: Path | None, out: Path,
                 compare: list[Path] = ()):
        self.run, self.info = run, run.info()
        self.compare = list(compare)
        self.rows = [r for r in run.current_table().to_pylist()]
        self.filtered = [r for r in self.rows if r["accepted"] is not None]
        self.student, self.eval = student, read_json(eval_json) if eval_json else None
        self.eval_path = eval_json
        self.out = out  # RUN/report (the assets folder, built under a temporary name)
        self.sections: list[str] = []
        self.dims = self._cell_dims()

    # -- helpers -----------------------------------------------------------------------------
    def _cell_dims(self) -> tuple[str, str]:
        varying = [d for d in CELL_DIMS if len({r[d] for r in self.rows}) > 1]
        dims = (varying + [d for d in ("emotion", "dialect") if d not in varying])[:2]
        return dims[0], dims[1]

    def image(self, name: str, fig_bytes: bytes, alt: str) -> str:
        (self.out / name).write_bytes(fig_bytes)
        return f'<p><img src="report/{esc(name)}" alt="{esc(alt)}"></p>'

    def add(self, title: str, body: str) -> None:
        anchor = re.sub(r"\W+", "-", title.lower()).strip("-")
        self.sections.append(f'<h2 id="{anchor}">{esc(title)}</h2>\n{body}')

    def thresholds(self):
        """(FilterConfig from the spec, a note when the run was filtered with other settings)."""
        config = load_config(self.run, None)
        used = (self.info.get("stages", {}).get("filter") or {}).get("config_hash")
        note = ""
        if used and used != config.hash:
            note = (f"The run's verdicts were made under filter settings {used}, not the {config.hash} its spec's "
                    "filter section gives now (a --config file or flags, or another stepforge version); the "
                    "thresholds marked are the spec's.")
        return config, note

    # -- sections ----------------------------------------------------------------------------
    def overview(self) -> None:
        stages = self.info.get("stages", {})
        rows = [[name, s.get("status", "-"), s.get("finished_at", "-")] for name, s in stages.items()]
        meta = [["spec", self.info.get("spec_path")], ["spec hash", self.info.get("spec_hash")],
                ["teacher", self.info.get("teacher")], ["codec", self.info.get("codec")],
                ["created", self.info.get("created_at")], ["manifest rows", len(self.rows)],
                ["tasks", len({r["id"] for r in self.rows})],
                ["accepted", f"{sum(1 for r in self.filtered if r['accepted'])} of {len(self.filtered)} filtered"]]
        self.add("Run", table(None, meta, left=2) + table(["stage", "status", "finished"], rows, left=3))

    def yields(self) -> None:
        a, b = self.dims
        cells = defaultdict(lambda: [0, 0])
        for r in self.filtered:
            cells[(r[a], r[b])][0] += bool(r["accepted"])
            cells[(r[a], r[b])][1] += 1
        ys, xs = sorted({k[0] for k in cells}, key=str), sorted({k[1] for k in cells}, key=str)
        png = heatmap(cells, ys, xs, a, b)
        summary = []
        for dim in CELL_DIMS:
            values = defaultdict(lambda: [0, 0])
            for r in self.filtered:
                values[r[dim]][0] += bool(r["accepted"])
                values[r[dim]][1] += 1
            summary += [[f"{dim}={v}", acc, n, f"{acc / n:.0%}"] for v, (acc, n) in sorted(values.items(), key=str)]
        self.add("Yield per category", self.image("yield_heatmap.png", png, f"yield {a} x {b}")
                 + table(["category", "accepted", "attempted", "yield"], summary))

    def scores(self) -> None:
        config, note = self.thresholds()
        cer = CERFilter({}, max_cer=config.max_cer, per_style=config.per_style, per_dialect=config.per_dialect)
        groups: dict = defaultdict(lambda: {"cer": [], "ss": [], "limit": set()})
        for r in self.filtered:
            g = groups[r["dialect"]]
            g["limit"].add(cer.limit(r))
            if r["cer"] is not None:
                g["cer"].append(r["cer"])
            if r["ss"] is not None:
                g["ss"].append(r["ss"])
        if not any(g["cer"] or g["ss"] for g in groups.values()):
            return
        cer_groups = {k: (g["cer"], sorted(x for x in g["limit"] if x is not None))
                      for k, g in groups.items() if g["cer"]}
        ss_groups = {k: (g["ss"], [config.min_ss]) for k, g in groups.items() if g["ss"]}
        body = ""
        if cer_groups:
            body += self.image("hist_cer.png", histograms(cer_groups, "CER (WER for English)", "max"),
                               "CER histograms")
        if ss_groups:
            body += self.image("hist_ss.png", histograms(ss_groups, "SS (resemblyzer cosine)", "min"),
                               "SS histograms")
        rows = [[k, len(g["cer"]), fmt(float(np.mean(g["cer"])) if g["cer"] else None),
                 ", ".join("none (unscored)" if x is None else f"{x:g}" for x in sorted(g["limit"], key=lambda x: x or -1)),
                 len(g["ss"]), fmt(float(np.mean(g["ss"])) if g["ss"] else None), f"{config.min_ss:g}"]
                for k, g in sorted(groups.items())]
        body += table(["dialect", "CER rows", "mean CER", "CER threshold (max)", "SS rows", "mean SS",
                       "SS threshold (min)"], rows)
        body += f'<p class="note">Thresholds: max_cer {config.max_cer:g}, per_dialect ' \
                f'{esc(json.dumps(config.per_dialect))}, per_style {esc(json.dumps(config.per_style))}, ' \
                f'min_ss {config.min_ss:g}. {esc(note)}</p>'
        self.add("CER/WER and speaker similarity", body)

    def rejections(self) -> None:
        rejected = [r for r in self.filtered if not r["accepted"]]
        if not rejected:
            if self.filtered:
                self.add("Rejection reasons", "<p>No row was rejected.</p>")
            return
        kinds = Counter(reason_kind(r["reject_reason"]) for r in rejected)
        example = {reason_kind(r["reject_reason"]): r["reject_reason"] for r in rejected}
        rows = [[k, example[k], n, f"{n / len(self.filtered):.0%}"] for k, n in kinds.most_common()]
        self.add("Rejection reasons", self.image("rejections.png", bar_chart(dict(kinds.most_common()), "rows"),
                                                 "rejection reasons")
                 + table(["reason", "example", "rows", "share of filtered"], rows, left=2))

    def durations(self) -> None:
        ok = [r for r in self.rows if r["status"] == "ok" and r["duration_s"] is not None]
        if not ok:
            return
        groups = {"accepted": [r["duration_s"] for r in ok if r["accepted"]],
                  "rejected": [r["duration_s"] for r in ok if r["accepted"] is False],
                  "not filtered": [r["duration_s"] for r in ok if r["accepted"] is None]}
        values = np.array([r["duration_s"] for r in ok])
        stats = [[len(values), fmt(float(values.sum()), 1), fmt(float(values.min()), 2),
                  fmt(float(np.median(values)), 2), fmt(float(values.max()), 2)]]
        self.add("Duration distribution", self.image("durations.png", duration_plot(groups), "durations")
                 + table(["utterances", "total s", "min s", "median s", "max s"], stats, left=0))

    def throughput(self) -> None:
        rows = stage_throughput(self.info.get("stages", {}), self.train_json(), self.eval)
        if not rows:
            return
        rates = {r[0]: float(r[5]) for r in rows if r[5] != "-"}
        body = table(["stage", "status", "items", "wall s", "items/s", "audio s per wall s"], rows, left=2)
        if rates:
            body = self.image("throughput.png", bar_chart(rates, "audio s per wall s"), "throughput") + body
        self.add("Throughput per stage", body + '<p class="note">Figures of each stage\'s last invocation.</p>')

    def train_json(self) -> dict | None:
        return read_json(self.student / "train.json") if self.student else None

    def training(self) -> None:
        if not self.student:
            return
        lines = read_metrics(self.student / "logs" / "metrics.jsonl")
        train = [(m["step"], m["loss"]) for m in lines if "loss" in m]
        heldout = [(m["step"], m["eval_loss"]) for m in lines if "eval_loss" in m]
        if not train and not heldout:
            return
        body = self.image("training_curve.png", training_curve(train, heldout), "training curve")
        info = self.train_json() or {}
        exported = info.get("exported") or {}
        facts = [["student", self.student], ["status", info.get("status")], ["steps", info.get("step")],
                 ["train rows", info.get("train_rows")], ["held-out rows", info.get("heldout_rows")],
                 ["parameters", info.get("parameters")], ["exported step", exported.get("step")],
                 ["wall s", info.get("wall_s")]]
        self.add("Training curve", body + table(None, facts, left=2))

    def student_vs_teacher(self) -> None:
        agg = (self.eval or {}).get("aggregate")
        if not agg:
            return
        rows = []
        for name, block in [("all", agg["all"])] + sorted(agg.get("lang", {}).items()):
            for side in [k for k in ("student", "teacher", "teacher_eval") if k in block]:
                s = block[side]
                label = "teacher (in this eval)" if side == "teacher_eval" else side
                rows.append([name if side == "student" else "", label, s["n"], fmt(s["mean_cer"]),
                             fmt(s["mean_wer"]), fmt(s["mean_ss"]),
                             "-" if s["accept_rate"] is None else f"{s['accept_rate']:.0%}"])
        note = (f"From {self.eval_path}: CER over character languages, WER over the others; SS is "
                f"{self.eval.get('ss_model', 'resemblyzer')} cosine vs the clone prompt or the teacher's rendering.")
        self.add("Student vs teacher", table(["language", "", "n", "CER", "WER", "SS", "accepted"], rows, left=2)
                 + f'<p class="note">{esc(note)}</p>' + stats_table(self.eval.get("stats")))

    def students_compared(self) -> None:
        students, evals = gather(self.run.path, self.compare)
        if len(students) < 2 and not self.compare:
            return  # the run's one student: the training curve and student-vs-teacher sections say it all
        rows = comparison_rows(students, evals)
        series = curves(students)
        body = self.image("students_heldout.png", heldout_curves(series), "held-out loss per student") if series else ""
        note = ("The run's kept students (students/NNN, oldest first), its current student and what --compare "
                "named; each eval sits beside the student whose weights it scored. A continued student counts "
                "its steps from scratch (the init's steps + its own). Mean [95% CI] over prompts.")
        self.add("Students compared", body + table(COMPARE_HEADER, rows, left=1) + f'<p class="note">{esc(note)}</p>')

    def audio(self) -> None:
        a, b = self.dims
        cells = defaultdict(lambda: {True: [], False: [], None: []})
        for r in self.rows:
            if r["status"] == "ok" and r["shard"]:
                cells[(r[a], r[b])][r["accepted"]].append(r)
        if not cells:
            return
        (self.out / "audio").mkdir()
        parts = []
        for key in spread(list(cells), MAX_AUDIO_CELLS):
            clips = [c for side in (True, False, None) for c in cells[key][side][:SAMPLES_PER_SIDE]]
            players = "".join(self.clip(r) for r in clips)
            parts.append(f"<h3>{esc(a)}={esc(key[0])}, {esc(b)}={esc(key[1])}</h3>{players}")
        self.add("Listen", "".join(parts))

    def clip(self, r: dict) -> str:
        key = sample_key(r["id"], r["attempt"] or 0)
        try:
            sample = read_sample(self.run.path / r["shard"], r["offset"], key=key, first="json")
            name = f"audio/{key}.wav"
            to_wav(sample["flac"], self.out / name)
        except (OSError, ValueError, KeyError) as exc:
            return f'<div class="clip bad">{esc(key)}: cannot read audio ({esc(exc)})</div>'
        verdict = {True: ("ok", "accepted"), False: ("bad", f"rejected: {r['reject_reason']}"),
                   None: ("", "not filtered")}[r["accepted"]]
        return (f'<div class="clip"><audio controls preload="metadata"><source src="report/{esc(name)}" '
                f'type="audio/wav"></audio><div>{esc(r["text"])}</div><div class="{verdict[0]}">{esc(verdict[1])}'
                f'</div><div class="note">{esc(key)} · {fmt(r["duration_s"], 2)} s · CER {fmt(r["cer"])} · '
                f'SS {fmt(r["ss"])}</div></div>')

    # -- the page ----------------------------------------------------------------------------
    def build(self) -> str:
        self.overview()
        if self.filtered:
            self.yields()
            self.scores()
        self.rejections()
        self.durations()
        self.throughput()
        self.training()
        self.student_vs_teacher()
        self.students_compared()
        self.audio()
        name = self.run.path.resolve().name
        return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>stepforge run '
                f'{esc(name)}</title><style>{CSS}</style></head><body><h1>stepforge run {esc(name)}</h1>'
                + "\n".join(self.sections) + "</body></html>\n")


def spread(keys: list[tuple], limit: int) -> list[tuple]:
    """At most ``limit`` (row, col) cells, sorted, chosen round-robin over the row values with each
    row starting at another column, so that the cells shown cover as many values of both as fit."""
    by_row: dict = defaultdict(list)
    for key in sorted(keys, key=str):
        by_row[key[0]].append(key)
    queues = [row[k % len(row):] + row[:k % len(row)] for k, row in enumerate(by_row.values())]
    chosen = []
    for depth in range(max(map(len, queues), default=0)):
        chosen += [q[depth] for q in queues if depth < len(q)]
    return sorted(chosen[:limit], key=str)


def reason_kind(reason: str | None) -> str:
    """A reject reason without its figures: ``cer 0.42 > 0.35`` -> ``cer > 0.35``, ``teacher
    error: X`` -> ``teacher error``, ``shard unreadable at offset 512`` -> ``... offset N``."""
    reason = reason or "(no reason)"
    head = reason.split(":")[0] if ":" in reason else reason
    head = re.sub(r"^(\w+) [-\d.]+ ([<>]=?) ", r"\1 \2 ", head)
    return re.sub(r"(?<![<>=] )(?<![\w.])\d+(\.\d+)?(?![\w.])", "N", head).strip()  # the threshold stays, other figures go


def stats_table(stats: dict | None) -> str:
    """eval.json's means with 95% CIs and the student/teacher ratio (pipelines.eval_stats)."""
    if not stats:
        return ""
    blocks = [(metric, b) for metric, b in stats.items() if isinstance(b, dict) and "student" in b]
    rows = [[metric, b["n"], fmt_ci(b["student"], metric == "accepted"),
             fmt_ci(b.get("teacher"), metric == "accepted"), fmt_ci(b.get("ratio"))] for metric, b in blocks]
    teacher = "voiced in this eval" if stats.get("teacher_side") == "teacher_eval" else "its corpus rows"
    note = (f"Mean [95% CI] over prompts, {stats.get('samples')} sample(s) each; teacher: {teacher}; "
            f"{stats.get('method')}.")
    return (table(["metric", "prompts", "student", "teacher", "student / teacher"], rows, left=1)
            + f'<p class="note">{esc(note)}</p>')


def stage_throughput(stages: dict, train: dict | None, evaluation: dict | None) -> list[list]:
    """[stage, status, items, wall s, items/s, audio s per wall s] from run.json's stage records,
    a student's train.json and an eval.json."""
    rows = []
    synth = (stages.get("synthesize") or {}).get("last") or {}
    if synth:
        rows.append(["synthesize", stages["synthesize"].get("status"), synth.get("tasks"), synth.get("wall_s"),
                     synth.get("tasks_per_s"), synth.get("audio_s_per_wall_s")])
    filt = (stages.get("filter") or {}).get("last") or {}
    if filt:
        wall, n = filt.get("wall_s"), filt.get("scored")
        rows.append(["filter", stages["filter"].get("status"), n, wall,
                     round(n / wall, 3) if wall and n else None, filt.get("audio_s_per_wall_s") or None])
    if train:
        last = train.get("last") or {}
        rows.append(["distill", train.get("status"), f"{train.get('step')} steps", train.get("wall_s"),
                     f"{last['tokens_per_s']} tokens/s" if last.get("tokens_per_s") else None, None])
    gen = (evaluation or {}).get("generation") or {}
    if gen:
        wall, n = gen.get("wall_s"), gen.get("tasks")
        rows.append(["eval (generation)", "done", n, wall, round(n / wall, 3) if wall and n else None,
                     gen.get("audio_s_per_wall_s")])
    return [[("-" if v is None else v) for v in row] for row in rows]


def to_wav(flac: bytes, path: Path) -> None:
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
    sf.write(path, audio, rate, subtype="PCM_16", format="WAV")


def find_eval(run: Path, student: Path | None, given: str | None) -> Path | None:
    """eval.json of ``--eval DIR`` (or a file), else RUN/eval/eval.json, else STUDENT/eval.json."""
    if given:
        path = Path(given)
        return path / "eval.json" if path.is_dir() else path
    for candidate in [run / "eval" / "eval.json"] + ([student / "eval.json"] if student else []):
        if candidate.exists():
            return candidate
    return None


def write_report(run: str | Path, student: str | Path | None = None, eval_dir: str | Path | None = None,
                 compare: list[str | Path] = ()) -> Path:
    """Write RUN/report.html and its assets under RUN/report/; returns the page's path.

    Args:
        run: the run directory (a RunError when it is not one).
        student: a student dir for the training curve (default RUN/student when it exists).
        eval_dir: an eval dir or eval.json (default RUN/eval, then STUDENT/eval.json).
        compare: more student dirs and eval dirs for the students-compared table
            (:mod:`pipelines.report_compare`; the run's own students are always in it).
    """
    rundir = RunDir(run)
    rundir.info()
    if student is not None and not Path(student).is_dir():
        raise UserError(f"{student}: no such student directory")
    if eval_dir is not None and not Path(eval_dir).exists():
        raise UserError(f"{eval_dir}: no such eval directory")
    student_path = Path(student) if student else (rundir.path / "student" if (rundir.path / "student").is_dir()
                                                  else None)
    eval_json = find_eval(rundir.path, student_path, eval_dir)
    if eval_json is not None and read_json(eval_json) is None:
        raise UserError(f"{eval_json}: not a readable eval.json")
    assets = rundir.path / "report"
    building = rundir.path / ".report.partial"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir()
    try:
        page = Report(rundir, student_path, eval_json, building, [Path(p) for p in compare]).build()
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    shutil.rmtree(assets, ignore_errors=True)
    building.rename(assets)
    target = rundir.path / "report.html"
    with atomic_path(target) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    return target
