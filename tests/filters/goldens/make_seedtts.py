"""Make goldens/seedtts_pairs.json: seed-tts-eval's per-utterance error rates of tricky
reference / transcript pairs, computed by UPSTREAM's own code, run from outside this repository.

Upstream: github.com/BytedanceSpeech/seed-tts-eval at 752f429 (``run_wer.py``). Its module body
loads Whisper and Paraformer and runs the ASR at import, so this script takes from its source
only the ``punctuation_all`` assignment and the ``process_one`` function (parsed with ``ast``,
executed as written with the script's own imports: jiwer's ``compute_measures``, zhon's
punctuation, ``string``). As ``run_asr`` does, a Chinese transcript goes through
``zhconv.convert(text, 'zh-cn')`` first. A list's figure is ``np.mean`` of its rates, as
``average_wer.py`` prints it (x100, 3 decimals). ``compute_measures`` left jiwer in 4.0 and zhon
is not a project dependency, so both are installed into a separate target:

    git --git-dir=/work/.mirror/BytedanceSpeech+seed-tts-eval/repo show 752f429:run_wer.py > /tmp/run_wer.py
    .venv/bin/pip install --target /tmp/seedtts_site --no-deps jiwer==3.1.0 zhon==2.1.1
    PYTHONPATH=/tmp/seedtts_site .venv/bin/python tests/filters/goldens/make_seedtts.py /tmp/run_wer.py

A pair whose reference normalises to nothing makes ``compute_measures`` raise: it is recorded
with ``"rate": null`` and the error, and left out of the list means.
"""
from __future__ import annotations

import ast
import importlib.metadata as metadata
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "seedtts_pairs.json"

# (name, lang, reference, ASR transcript); names say what is tricky about the pair
PAIRS = [
    ("en_curly_apostrophe", "en", "Don\u2019t stop now.", "don't stop now"),
    ("en_fullwidth_apostrophe", "en", "Don\uff07t stop", "don't stop"),
    ("en_ascii_apostrophe_kept", "en", "It's Mr. Smith's book.", "its mr smiths book"),
    ("en_hyphen_joins", "en", "A well-known fact.", "a well known fact"),
    ("en_case_and_punctuation", "en", "HELLO, World!", "hello world"),
    ("en_symbols_deleted", "en", "Save $5 + 10% (today)!", "save 5 10 today"),
    ("en_curly_quotes", "en", "\u201cYes,\u201d she said\u2026", "yes she said"),
    ("en_guillemets_kept", "en", "\u00abBonjour\u00bb, he said.", "bonjour he said"),
    ("en_em_dash_joins", "en", "Wait\u2014what?", "wait what"),
    ("en_ideographic_space_deleted", "en", "hello\u3000world", "hello world"),
    ("en_tab_inside_a_word", "en", "good\tmorning everyone", "good morning everyone"),
    ("en_no_break_space", "en", "ten\u00a0dollars", "ten dollars"),
    ("en_decomposed_accent", "en", "cafe\u0301 open", "caf\u00e9 open"),
    ("en_numbers_not_spelled", "en", "I have 13 cats.", "I have thirteen cats."),
    ("en_insertions_over_one", "en", "Yes.", "yes yes yes yes"),
    ("en_empty_transcript", "en", "The cat sat.", ""),
    ("en_punctuation_only_reference", "en", "...", "words"),
    ("zh_mixed_case_english", "zh", "我用iPhone拍照。", "我用iphone拍照"),
    ("zh_mixed_english_spaced", "zh", "我喜欢 Python 编程", "我喜欢python编程"),
    ("zh_traditional_transcript", "zh", "今天天气很好", "今天天氣很好。"),
    ("zh_traditional_reference", "zh", "這是測試", "这是测试"),
    ("zh_fullwidth_punctuation", "zh", "你好，世界！「测试」《书》", "你好世界测试书"),
    ("zh_spaces_ignored", "zh", "今天 天气\u3000 很好", "今天天气很好"),
    ("zh_ellipsis_and_dot", "zh", "好吧……走吧·再见", "好吧走吧再见"),
    ("zh_substitution", "zh", "那等我们到海洋馆之后", "那等我们到海洋馆知后"),
    ("zh_digits_kept", "zh", "我有3只猫", "我有三只猫"),
    ("zh_punctuation_only_reference", "zh", "。。。", "好"),
]
LISTS = {"en": [n for n, lang, *_ in PAIRS if lang == "en"], "zh": [n for n, lang, *_ in PAIRS if lang == "zh"]}


def upstream(run_wer: Path) -> dict:
    """The upstream definitions ``punctuation_all`` and ``process_one``, executed as written."""
    tree = ast.parse(run_wer.read_text(encoding="utf-8"))
    keep = [node for node in tree.body
            if isinstance(node, (ast.Import, ast.ImportFrom)) and _light(node)
            or isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "punctuation_all" for t in node.targets)
            or isinstance(node, ast.FunctionDef) and node.name == "process_one"]
    names: dict = {}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(run_wer), "exec"), names)  # noqa: S102
    return names


def _light(node) -> bool:
    """The imports process_one needs (not transformers, funasr, ...)."""
    modules = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    return all(m.split(".")[0] in ("jiwer", "zhon", "string", "sys", "os") for m in modules)


def main(run_wer: Path) -> None:
    import zhconv
    from zhon.hanzi import punctuation

    names = upstream(run_wer)
    rows = []
    for name, lang, ref, hyp in PAIRS:
        names["lang"] = lang  # run_wer.py's global, from sys.argv[3]
        hypo = zhconv.convert(hyp, "zh-cn") if lang == "zh" else hyp
        try:
            rate, error = float(names["process_one"](hypo, ref)[2]), None
        except ValueError as exc:
            rate, error = None, str(exc)
        rows.append({"name": name, "lang": lang, "reference": ref, "hypothesis": hyp, "rate": rate, "error": error})
    by_name = {r["name"]: r for r in rows}
    lists = {}
    for lang, members in LISTS.items():
        rates = [by_name[n]["rate"] for n in members if by_name[n]["rate"] is not None]
        lists[lang] = {"pairs": members, "mean": float(np.mean(rates)), "printed_pct": round(np.mean(rates) * 100, 3)}
    out = {
        "made_by": "tests/filters/goldens/make_seedtts.py (see its docstring)",
        "upstream": "github.com/BytedanceSpeech/seed-tts-eval@752f429 run_wer.py process_one + average_wer.py mean",
        "versions": {p: metadata.version(p) for p in ("jiwer", "zhon", "zhconv", "numpy")},
        "zhon_hanzi_punctuation": punctuation,
        "pairs": rows,
        "lists": lists,
    }
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(rows)} pairs")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
