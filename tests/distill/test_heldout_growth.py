"""The held-out set under corpus growth: a student continued from another (student.init) keeps
every row the other held out, and never holds out a row the other trained on."""
from __future__ import annotations

import json
import random

import pytest

from distill.data import Corpus, DataError, PreviousSplit, Row, write_split
from engine.task import Task


def rows(texts: list[str], per_text: int = 1, tag: str = "a") -> list[Row]:
    return [Row(Task(f"{tag}{i}-{k}", text, "en", dialect="english"), "run", f"shards/{tag}.tar", i * 10 + k, 10)
            for i, text in enumerate(texts) for k in range(per_text)]


def corpus(rows_: list[Row]) -> Corpus:
    return Corpus(rows_, [r.n_tokens for r in rows_], None, "melvq-test", [("p", 1)] * len(rows_))


def keys(c: Corpus) -> set[str]:
    return {r.task.id for r in c.rows}


def grow(old: list[Row], rng: random.Random, step: int) -> list[Row]:
    """``old`` plus new texts and new rows of old texts (a grown spec voices texts again)."""
    new_texts = [f"new text {step}.{i}" for i in range(rng.randint(1, 12))]
    again = rng.sample(sorted({r.task.text for r in old}), 3)
    return old + rows(new_texts, tag=f"n{step}-") + rows(again, tag=f"r{step}-")


@pytest.mark.parametrize("seed", range(6))
def test_growth_never_moves_an_old_row_between_train_and_heldout(tmp_path, seed):
    rng = random.Random(seed)
    current = rows([f"sentence number {i}" for i in range(30)], per_text=rng.choice([1, 2]))
    train, held = corpus(current).split(heldout=4, seed=seed)
    moved_without = 0
    for step in range(4):  # the student of each step continues the previous one
        write_split(tmp_path / "split.json", train, held)
        current = grow(current, rng, step)
        plain_train, plain_held = corpus(current).split(heldout=4, seed=seed)
        moved_without += bool(keys(held) - keys(plain_held) or keys(train) & keys(plain_held))
        new_train, new_held = corpus(current).split(heldout=4, seed=seed,
                                                    previous=PreviousSplit.read(tmp_path))
        assert keys(held) <= keys(new_held), "a held-out row went to train"
        assert not keys(train) & keys(new_held), "a training row became held out"
        assert not {r.task.text for r in new_train.rows} & {r.task.text for r in new_held.rows}
        assert keys(new_train) | keys(new_held) == {r.task.id for r in current}
        train, held = new_train, new_held
    if seed == 0:  # the hash pick alone does move rows as the corpus grows (what this guards)
        assert moved_without


def test_new_texts_join_the_heldout_set_only_up_to_the_count(tmp_path):
    old = rows([f"s{i}" for i in range(10)])
    train, held = corpus(old).split(heldout=0)
    write_split(tmp_path / "split.json", train, held)  # nothing held out before
    grown = old + rows([f"t{i}" for i in range(10)], tag="t")
    new_train, new_held = corpus(grown).split(heldout=3, previous=PreviousSplit.read(tmp_path))
    assert len(new_held) == 3 and all(r.task.text.startswith("t") for r in new_held.rows)


def test_a_student_without_split_json_keeps_its_heldout_jsonl_texts(tmp_path):
    old = rows([f"s{i}" for i in range(12)])
    train, held = corpus(old).split(heldout=3)
    held.write_prompts(tmp_path / "heldout.jsonl")  # what students made before split.json wrote
    previous = PreviousSplit.read(tmp_path)
    assert previous.seen is None
    grown = old + rows([f"t{i}" for i in range(12)], tag="t")
    new_train, new_held = corpus(grown).split(heldout=3, previous=previous)
    assert keys(new_held) == keys(held)  # what it trained on is unknown: no text joins


def test_no_previous_split_and_a_bad_one(tmp_path):
    assert PreviousSplit.read(tmp_path) is None and PreviousSplit.read(None) is None
    (tmp_path / "split.json").write_text(json.dumps({"heldout": []}))
    with pytest.raises(DataError, match="unreadable held-out split"):
        PreviousSplit.read(tmp_path)


def test_distill_preflight_reads_the_init_students_split(filtered_run, tmp_path):
    """build_data (the driver's pre-flight and every training rank) splits by student.init's split.json."""
    from distill.config import resolve
    from distill.data import SPLIT_FILE, text_digest
    from distill.preflight import build_data
    from engine.lm.text_tokenizer import load_tokenizer
    from engine.models import Step1Config

    tok, layout = load_tokenizer(None, Step1Config.preset("tiny").to_dict())
    cfg = resolve([{"data": {"heldout": 2}, "train": {"grad_accum": 1}}])
    train, held, _ = build_data(cfg, [str(filtered_run)], tok, layout, 1)
    chosen = train.rows[0].task.text  # a text the plain split trains on
    texts = {r.task.text for r in train.rows + held.rows}
    (tmp_path / SPLIT_FILE).write_text(json.dumps({"heldout": [text_digest(chosen)],
                                                   "train": sorted(text_digest(t) for t in texts)}))
    cfg["student"]["init"] = str(tmp_path)
    train2, held2, _ = build_data(cfg, [str(filtered_run)], tok, layout, 1)
    assert {r.task.text for r in held2.rows} == {chosen}  # every text was seen: none joins
    assert len(train2) + len(held2) == len(train) + len(held)
