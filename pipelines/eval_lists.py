"""seed-tts-eval test lists as eval prompts, and their figures in ``eval.json``.

A list (seed-tts-eval's ``meta.lst``, the format public TTS test sets come in) has one utterance
per line, ``utt|prompt_text|prompt_wav|target_text`` (a fifth field, the target's ground-truth
wav, is ignored), with ``prompt_wav`` relative to the list's folder. Each line is a clone task:
speak ``target_text`` in the voice of ``prompt_wav``, whose transcript is ``prompt_text``.

    test = read_list("seedtts/zh/meta.lst")       # TestList; the language from the target texts
    test = read_list("seedtts/en/meta.lst:en")    # or named after the last colon
    prompts = test.prompts()                        # eval prompts (pipelines.eval_prompts.Prompt)
    block = list_figures(test, eval_rows)           # eval.json["lists"][test.name]
    records, skipped, tests = read_inputs("heldout.jsonl", ["zh/meta.lst"])   # what eval reads
    print(format_lists(lists_report(tests, eval_rows)))

A list's figures are seed-tts-eval's: the mean over its utterances of the per-utterance WER (CER
for Chinese) under the script's own normalisation (:mod:`filters.seedtts`), and the mean SS
against each line's prompt wav. The lenient filter normalisation's mean is given beside it, each
figure naming its normalisation.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from engine.instructions import DEFAULT_DIALECT, Instruction
from engine.spec import detect_lang, task_seed
from engine.speakers import check_audio
from engine.task import Task, task_id
from filters.cer import error_rate
from filters.normalize import CHAR_LANGS
from filters.seedtts import NAME as SEED_TTS_EVAL, list_mean, seed_tts_error_rate
from manifests.digest import file_sha256
from manifests.errors import UserError
from pipelines.eval_prompts import Prompt, read_prompts

LENIENT = "stepforge"  # the filters' normalisation (filters.normalize)
# eval.json["normalisation"]: which normalisation each figure of an eval.json used
NORMALISATION = {
    "rows": LENIENT, "aggregate": LENIENT,
    "lists": f"{SEED_TTS_EVAL} (the cer/wer of each list; its '{LENIENT}' block: the filters' normalisation)",
    SEED_TTS_EVAL: "filters.seedtts: seed-tts-eval's run_wer.py exactly",
    LENIENT: "filters.normalize: the filters' lenient normalisation",
}


@dataclass(frozen=True)
class Line:
    utt: str
    prompt: Prompt


@dataclass(frozen=True)
class TestList:
    """One list: ``name`` (the file name without ``.lst``, made unique by :func:`read_lists`),
    its ``path``, ``lang`` and lines in file order."""

    name: str
    path: Path
    lang: str
    lines: tuple[Line, ...]

    def prompts(self) -> list[Prompt]:
        return [line.prompt for line in self.lines]


def read_list(spec: str | Path, name: str | None = None) -> TestList:
    """Parse ``FILE.lst`` or ``FILE.lst:LANG`` (LANG: en, zh, ja or ko; default: the language
    most target texts are written in). Every prompt wav must be readable audio of 0.5-30 s.

    Raises:
        UserError: ``FILE:LINE: what is wrong`` for the first bad line, or an empty list.
    """
    path, lang = split_list_spec(str(spec))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the test list ({exc})") from None
    rows = []
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            rows.append((number, _fields(raw, f"{path}:{number}")))
    if not rows:
        raise UserError(f"{path}: no lines (expected utt|prompt_text|prompt_wav|target_text)")
    lang = lang or _majority_lang(path, rows)
    lines = tuple(Line(f[0], _prompt(path, number, lang, *f[1:])) for number, f in rows)
    return TestList(name or path.name.removesuffix(".lst"), path.resolve(), lang, lines)


def read_lists(specs) -> list[TestList]:
    """:func:`read_list` of each; names made unique (``meta``, ``meta-2``) in the given order."""
    out, seen = [], Counter()
    for spec in specs:
        stem = split_list_spec(str(spec))[0].name.removesuffix(".lst")
        seen[stem] += 1
        out.append(read_list(spec, stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"))
    return out


def read_inputs(prompts, lists) -> tuple[list[Prompt], int, list[TestList]]:
    """What an eval reads: the prompts file's prompts (when given), then each list's lines; a
    task given before is not repeated. Returns (prompts, duplicate lines of the prompts file
    skipped, the lists).

    Raises:
        UserError: neither a prompts file nor a list, or a bad file (see :func:`read_list`).
    """
    if prompts is None and not lists:
        raise UserError("nothing to evaluate: give a prompts file (--prompts) and/or test lists (--list)")
    records, skipped = read_prompts(prompts) if prompts is not None else ([], 0)
    tests = read_lists(lists or [])
    seen = {p.task.id for p in records}
    for test in tests:
        for prompt in test.prompts():
            if prompt.task.id not in seen:
                seen.add(prompt.task.id)
                records.append(prompt)
    return records, skipped, tests


def split_list_spec(spec: str) -> tuple[Path, str | None]:
    """``FILE.lst:LANG`` -> (FILE.lst, LANG); ``FILE.lst`` -> (FILE.lst, None)."""
    head, _, tail = spec.rpartition(":")
    if head and tail in DEFAULT_DIALECT:
        return Path(head), tail
    if head and tail and "/" not in tail and not Path(spec).exists():
        raise UserError(f"{spec}: unknown list language {tail!r} (choose {', '.join(DEFAULT_DIALECT)})")
    return Path(spec), None


def _fields(raw: str, where: str) -> list[str]:
    parts = [p.strip() for p in raw.rstrip("\r\n").split("|")]
    if len(parts) not in (4, 5):
        raise UserError(f"{where}: expected utt|prompt_text|prompt_wav|target_text, got {len(parts)} fields")
    for field, value in zip(("utt", "prompt_text", "prompt_wav", "target_text"), parts):
        if not value:
            raise UserError(f"{where}: empty {field}")
    return parts[:4]


def _majority_lang(path: Path, rows) -> str:
    votes = Counter(detect_lang(fields[3]) for _, fields in rows)
    lang, _ = max(votes.items(), key=lambda kv: (kv[0] is not None, kv[1]))
    if lang is None:
        raise UserError(f"{path}: cannot tell the language of the target texts; name it: {path}:en")
    return lang


def _prompt(path: Path, number: int, lang: str, prompt_text: str, prompt_wav: str, target: str) -> Prompt:
    wav = Path(prompt_wav)
    wav = (wav if wav.is_absolute() else path.parent / wav).resolve()
    where = f"{path}:{number}"
    if not wav.is_file():
        raise UserError(f"{where}: no such prompt wav {wav}")
    try:
        check_audio(wav)
    except UserError as exc:
        raise UserError(f"{where}: prompt wav {exc}") from None
    instruction = Instruction(dialect=DEFAULT_DIALECT[lang], speaker=wav.stem)
    tid = task_id(target, instruction, lang, file_sha256(wav))
    task = Task(id=tid, text=target, lang=lang, dialect=instruction.dialect, speaker=wav.stem,
                speaker_wav=str(wav), speaker_text=prompt_text, seed=task_seed(0, tid))
    return Prompt(task, {}, number)


def list_figures(test: TestList, rows: list[dict]) -> dict:
    """The eval.json block of one list from eval.json's rows (every row of a line's task, so each
    seeded sample counts as an utterance): seed-tts-eval's mean error rate and SS, and the
    lenient normalisation's mean error rate, each naming its normalisation."""
    by_task: dict[str, list[dict]] = {}
    for row in rows:
        by_task.setdefault(row.get("prompt_id") or row["id"], []).append(row)
    metric = "cer" if test.lang in CHAR_LANGS else "wer"
    utterances = []
    for line in test.lines:
        for row in by_task.get(line.prompt.task.id, []):
            s = row["student"]
            asr = s.get("asr_text")
            utterances.append({
                "utt": line.utt, "id": row["id"], "status": s.get("status"), "asr_text": asr,
                metric: None if asr is None else seed_tts_error_rate(line.prompt.task.text, asr, test.lang),
                f"{metric}_{LENIENT}": None if asr is None else error_rate(line.prompt.task.text, asr, test.lang),
                "ss": s.get("ss")})
    seed = [u[metric] for u in utterances]
    lenient = [u[f"{metric}_{LENIENT}"] for u in utterances]
    ss = [u["ss"] for u in utterances]
    return {
        "path": str(test.path), "lang": test.lang, "lines": len(test.lines), "utterances": len(utterances),
        metric: _round(list_mean(seed)), f"n_{metric}": _count(seed), "normalisation": SEED_TTS_EVAL,
        LENIENT: {metric: _round(list_mean(lenient)), f"n_{metric}": _count(lenient), "normalisation": LENIENT},
        "ss": _round(list_mean(ss)), "n_ss": _count(ss),
        "rows": utterances,
    }


def lists_report(tests: list[TestList], rows: list[dict]) -> dict:
    """eval.json["lists"]: :func:`list_figures` of each list, by name."""
    return {test.name: list_figures(test, rows) for test in tests}


def format_lists(report: dict) -> str:
    """One line per list: its seed-tts-eval figures (and the lenient error rate)."""
    lines = []
    for name, b in report.items():
        metric = "cer" if "cer" in b else "wer"
        ss = "-" if b["ss"] is None else f"{b['ss']:.3f}"
        lines.append(f"list {name} ({b['lang']}, {b['utterances']} utterances): {metric.upper()} "
                     f"{_pct(b[metric])} ({SEED_TTS_EVAL}; {LENIENT} {_pct(b[LENIENT][metric])}), SS {ss}")
    return "\n".join(lines)


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.3f}%"


def _round(value):
    return None if value is None else round(value, 6)


def _count(values) -> int:
    return sum(v is not None for v in values)
