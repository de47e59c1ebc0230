"""distill.data: training sequences from real shards, deterministic epochs, rank sharding, resume."""
from __future__ import annotations

import io

import numpy as np
import pytest

from distill.data import (GROUP_START, IGNORE, NO_LOSS, VQ02, VQ06, Corpus, DataError, PackPlan,
                          SequenceBuilder, collate, load_sample)
from engine.models import Step1Config, token_layout
from engine.lm.text_tokenizer import load_tokenizer
from engine.tokens import STEP_AUDIO, TokenLayout


@pytest.fixture(scope="module")
def builder():
    tok, layout = load_tokenizer(None, Step1Config.preset("tiny").to_dict())
    return SequenceBuilder(layout, tok)


@pytest.fixture(scope="module")
def corpus(filtered_run, builder):
    return Corpus.load([filtered_run], builder)


def test_sequence_is_the_tts_prompt_then_audio_then_eot(corpus, builder):
    row = corpus.rows[0]
    raw = load_sample(row)
    tokens = np.load(io.BytesIO(raw["tokens.npy"]))
    s = builder.build(row, raw)
    prompt = builder.prompt(row.task)
    n = len(tokens)
    assert len(s) == len(prompt) + n + 1 == corpus.lengths[0]
    assert s.input_ids[: len(prompt)].tolist() == prompt
    assert s.input_ids[-1] == builder.tok.eot
    # audio ids keep their codebook meaning in the compact layout
    layout = builder.layout
    audio = s.input_ids[len(prompt):-1]
    assert (audio - layout.vq02_offset + STEP_AUDIO.vq02_offset).tolist() == tokens.tolist()
    # loss exactly on the positions that predict audio ids and the final EOT, already shifted
    has_loss = s.labels != IGNORE
    assert has_loss.sum() == n + 1
    assert s.labels[has_loss].tolist() == s.input_ids[len(prompt):].tolist()
    assert ((s.streams != NO_LOSS) == has_loss).all()
    codes = s.streams[has_loss]
    assert codes[:5].tolist() == [GROUP_START, VQ02, VQ06, VQ06, VQ06]
    assert codes[-1] == GROUP_START  # EOT may only come where a group would start
    targets = s.labels[has_loss]
    in_vq06 = (targets >= layout.vq06_offset) & (targets < layout.audio_end)
    assert (in_vq06 == (codes == VQ06)).all()


def test_topk_lands_on_the_positions_that_predict_each_token(corpus, builder):
    row = corpus.rows[0]
    raw = dict(load_sample(row))
    n = len(np.load(io.BytesIO(raw["tokens.npy"])))
    tokens = np.load(io.BytesIO(raw["tokens.npy"]))
    ids = np.stack([np.append(tokens, 3), np.full(n + 1, 5)], axis=1)  # 5: a text id -> empty slot
    lps = np.stack([np.full(n + 1, -0.1), np.full(n + 1, -3.0)], axis=1).astype(np.float16)
    buf = io.BytesIO()
    np.savez(buf, ids=ids.astype(np.int32), logprobs=lps)
    raw["topk.npz"] = buf.getvalue()
    s = builder.build(row, raw)
    has_loss = s.labels != IGNORE
    assert (s.topk_ids[has_loss, 0] == s.labels[has_loss]).all()
    assert (s.topk_ids[has_loss, 1] == -1).all() and (s.topk_logprobs[has_loss, 1] == 0).all()
    assert (s.topk_ids[~has_loss] == -1).all()
    batch = collate([s, builder.build(row, raw)])
    assert batch["topk_ids"].shape == (1, 2 * len(s), 2)


def test_split_holds_out_whole_texts(corpus):
    train, held = corpus.split(heldout=3, seed=0)
    assert len(train) + len(held) == len(corpus) and len(held) >= 3
    assert not {r.task.text for r in train.rows} & {r.task.text for r in held.rows}
    again, _ = corpus.split(heldout=3, seed=0)
    assert [r.key for r in again.rows] == [r.key for r in train.rows]
    with pytest.raises(DataError, match="nothing to train on"):
        corpus.split(heldout=len(corpus) + 5)


def test_epochs_are_deterministic_sharded_and_resumable(corpus):
    plan = PackPlan(corpus, max_tokens=1600, seed=3, buffer=4)
    assert plan.order(0) == PackPlan(corpus, 1600, seed=3, buffer=4).order(0)
    assert sorted(plan.order(0)) == list(range(len(corpus)))
    assert plan.order(0) != plan.order(1)
    packs = plan.packs(0)
    assert all(sum(corpus.lengths[i] for i in p) <= 1600 for p in packs)
    world = 2
    r0 = [b["ids"] for b in plan.batches(0, rank=0, world=world)]
    r1 = [b["ids"] for b in plan.batches(0, rank=1, world=world)]
    assert len(r0) == len(r1) == plan.steps_per_epoch(world)
    assert not {i for b in r0 for i in b} & {i for b in r1 for i in b}
    resumed = [b["ids"] for b in plan.batches(0, rank=0, world=world, start=1)]
    assert resumed == r0[1:]
    b = next(plan.batches(0))
    cu = b["cu_seqlens"].tolist()
    assert cu[0] == 0 and cu[-1] == b["input_ids"].shape[1] and len(cu) == len(b["ids"]) + 1
    assert (b["positions"][0, cu[1]:cu[2]] == np.arange(cu[2] - cu[1])).all() if len(cu) > 2 else True


def test_shared_prefix_packs_every_row_once_with_the_system_turn_once(corpus):
    plain = PackPlan(corpus, max_tokens=1600, seed=3, buffer=4)
    plan = PackPlan(corpus, max_tokens=1600, seed=3, buffer=4, share_prefix=True)
    packs = plan.packs(0)
    assert sorted(i for p in packs for i in p) == list(range(len(corpus)))
    assert len(packs) < len(plain.packs(0))  # the system prompt is most of a short row
    for pack in packs:
        (key, p), = {corpus.prefixes[i] for i in pack}
        assert p + sum(corpus.lengths[i] - p for i in pack) <= 1600
    for pack, batch in zip(packs, plan.batches(0)):
        samples = [plan.sample(i) for i in pack]
        p = batch["shared_prefix"]
        assert p == samples[0].prefix_len > 0 and batch["cu_seqlens"].tolist()[1] == p
        assert batch["input_ids"][0, :p].tolist() == samples[0].input_ids[:p].tolist()
        rest = np.concatenate([s.input_ids[p:] for s in samples])
        assert batch["input_ids"][0, p:].tolist() == rest.tolist()
        assert batch["positions"][0].tolist() == list(range(p)) + [j for s in samples for j in range(p, len(s))]
        # the same loss positions and targets as with a copy per sample
        assert batch["labels"][0].tolist() == [IGNORE] * p + np.concatenate([s.labels[p:] for s in samples]).tolist()
        assert (batch["labels"] != IGNORE).sum() == sum((s.labels != IGNORE).sum() for s in samples)
    resumed = [b["ids"] for b in plan.batches(0, start=1)]
    assert resumed == [[plan.corpus.rows[i].key for i in p] for p in packs[1:]]
    other = plan.sample(1)
    other.input_ids = other.input_ids.copy()
    other.input_ids[5] += 1  # a different system turn (e.g. another speaker's)
    with pytest.raises(ValueError, match="system turn"):
        collate([plan.sample(0), other], share_prefix=True)


def test_a_sequence_longer_than_a_batch_is_refused(corpus):
    with pytest.raises(DataError, match="raise data.max_tokens"):
        PackPlan(corpus, max_tokens=64)


def test_a_student_with_other_codebooks_is_refused(builder):
    other = TokenLayout(text_size=264, vq02_size=512, vq06_size=4096, vocab_size=264 + 512 + 4096)
    with pytest.raises(DataError, match="codebooks"):
        SequenceBuilder(other, builder.tok)


def test_clone_prompts_are_tokenized_only_by_the_corpus_codec(corpus, builder):
    from engine.codec import load_codec

    assert builder.corpus_codec == corpus.codec_version == load_codec().version
    assert builder.codec.version == corpus.codec_version
    tok, layout = load_tokenizer(None, Step1Config.preset("tiny").to_dict())
    old = SequenceBuilder(layout, tok)
    old.corpus_codec = "melvq-1+00000000"  # a corpus from other codebooks
    with pytest.raises(DataError, match="melvq-1[+]00000000"):
        old.codec


def test_a_missing_run_is_refused(tmp_path, builder):
    with pytest.raises(DataError, match="not a stepforge run"):
        Corpus.load([tmp_path / "nope"], builder)


def test_heldout_prompts_carry_the_teacher_scores(corpus, tmp_path):
    import json

    _, held = corpus.split(heldout=2, seed=0)
    held.write_prompts(tmp_path / "p.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [r.task.id for r in held.rows]
    assert all(x["teacher"]["accepted"] is True and "cer" in x["teacher"] for x in lines)


def test_compact_layout_matches_the_student_config():
    assert token_layout(Step1Config.preset("tiny")).vq02_offset == 264
