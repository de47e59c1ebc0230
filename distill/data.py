"""Training data for distillation: accepted rows of run directories as packed TTS sequences.

    corpus = Corpus.load(["runs/a", "runs/b"], student_layout, tokenizer)   # accepted rows only
    train, heldout = corpus.split(heldout=32, seed=0)                         # held out by text
    write_split("STUDENT/split.json", train, heldout)    # a student continued from it keeps them
    plan = PackPlan(train, max_tokens=4096, seed=0)
    for batch in plan.batches(epoch=0, rank=0, world=1, start=0):             # resumable mid-epoch
        hidden = model.model(batch["input_ids"], cu_seqlens=batch["cu_seqlens"])

One training sequence is the Step-Audio TTS prompt (system turn with tags, optional clone turn,
tagged text, ``assistant``) followed by the teacher's audio ids and EOT. Only the audio ids and
the final EOT carry loss: ``labels`` holds the (already shifted) target of every position, -100
elsewhere, and ``streams`` says which codebook the 2:3 pattern allows there (0: vq02 or EOT at a
group start, 1: the second vq02, 2: vq06, -1: no loss).

The epoch order is a pure function of (seed, epoch): shards are shuffled, then samples within a
moving buffer; sequences are packed greedily into rows of at most ``max_tokens``; rank ``r`` of
``w`` takes packs ``r, r + w, ...`` (the epoch is cut to a multiple of ``w`` so every rank takes
the same number of steps). Resuming at pack ``n`` of an epoch therefore needs only ``(epoch, n)``.

With ``share_prefix`` a pack holds sequences whose system turn is the same token for token; the
turn is placed once at the start of the row and every sequence continues it (``shared_prefix`` in
the batch; :func:`engine.models.attention.packed_attention`). The model computes the same hidden
states and gradients as with a copy per sequence, and a pack holds several times more sequences:
the Step-Audio system prompt is most of a short utterance's tokens.

Held-out rows are whole texts, picked by a hash of the text. A student that continues another
(``student.init``, e.g. after the corpus grew) reads that student's split (:class:`PreviousSplit`):
every text it held out stays held out, and no text it trained on is held out now; only texts it
never saw may join the held-out set.
"""
from __future__ import annotations

import hashlib
import io
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.codec import load_codec
from engine.instructions import Instruction
from engine.prompts import ClonePrompt, build_tts_prompt
from engine.task import Task
from engine.teachers.lm import clone_turn, convert_layout
from engine.tokens import STEP_AUDIO, TokenLayout, check_audio_ids
from manifests import RunDir, RunError
from manifests.atomic import atomic_path
from manifests.errors import UserError
from manifests.shards import read_sample

IGNORE = -100
SPLIT_FILE = "split.json"  # in STUDENT: the text digests it held out and trained on (write_split)
NO_LOSS, GROUP_START, VQ02, VQ06 = -1, 0, 1, 2


class DataError(UserError):
    """The runs cannot feed this student (empty, all rejected, a layout mismatch...)."""


@dataclass(frozen=True)
class Row:
    """One accepted manifest row: the task, where its sample lives and the teacher's scores."""

    task: Task
    run: str
    shard: str
    offset: int
    n_tokens: int
    scores: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{Path(self.run).name}/{self.task.id}"


@dataclass
class Sample:
    """One training sequence, all ``[seq]`` numpy arrays (``topk_*`` ``[seq, k]`` or None)."""

    id: str
    input_ids: np.ndarray
    labels: np.ndarray
    streams: np.ndarray
    topk_ids: np.ndarray | None = None
    topk_logprobs: np.ndarray | None = None
    prefix_len: int = 0  # tokens of the system turn (bos ... first EOT), which carry no loss

    def __len__(self) -> int:
        return len(self.input_ids)


# -- reading runs --------------------------------------------------------------------------

def _accepted_rows(run_path: Path) -> tuple[list[Row], dict]:
    """Accepted rows of one run and the run's lineage (codec version); DataError when none."""
    run = RunDir(run_path)
    try:
        info = run.info()
        table = run.current_table()
    except RunError as exc:
        raise DataError(str(exc)) from None
    rows = table.to_pylist()
    if not rows:
        raise DataError(f"{run_path} has no synthesized rows")
    if all(r["accepted"] is None for r in rows):
        raise DataError(f"{run_path} has not been filtered yet (run `stepforge filter {run_path}`)")
    keep = [r for r in rows if r["accepted"] and r["status"] == "ok"]
    if not keep:
        reasons = Counter(r["reject_reason"] or r["error"] or "?" for r in rows)
        top = ", ".join(f"{k} ({v})" for k, v in reasons.most_common(3))
        raise DataError(f"{run_path}: all {len(rows)} rows were rejected ({top})")
    out = []
    for r in keep:
        scores = {k: r.get(k) for k in ("cer", "wer", "ss", "accepted", "duration_s")}
        out.append(Row(Task.from_row(r), str(run_path), r["shard"], int(r["offset"]),
                       int(r["n_tokens"]), scores))
    return out, info


def load_sample(row: Row) -> dict[str, bytes]:
    """The shard members of ``row``'s sample (``tokens.npy``, ``json``, ...) by name."""
    return read_sample(Path(row.run) / row.shard, row.offset)


# -- sequences -----------------------------------------------------------------------------

def stream_codes(n_audio: int) -> np.ndarray:
    """``int8 [n_audio + 1]``: the stream of each audio target and of the final EOT."""
    phase = np.arange(n_audio + 1) % 5
    return np.where(phase == 0, GROUP_START, np.where(phase == 1, VQ02, VQ06)).astype(np.int8)


class SequenceBuilder:
    """Builds :class:`Sample` s for one student (its text tokenizer and id layout).

    Args:
        layout: the student's :class:`TokenLayout` (its audio codebooks must be 1024 / 4096).
        tokenizer: the student's text tokenizer (``engine.prompts.TextTokenizer``).
        codec: tokenizes clone prompts (loaded on the first clone row).
    """

    def __init__(self, layout: TokenLayout, tokenizer, codec=None):
        if (layout.vq02_size, layout.vq06_size) != (STEP_AUDIO.vq02_size, STEP_AUDIO.vq06_size):
            raise DataError(f"the student's audio codebooks are {layout.vq02_size}/{layout.vq06_size} "
                            f"codes; the shards hold Step-Audio ids with "
                            f"{STEP_AUDIO.vq02_size}/{STEP_AUDIO.vq06_size}")
        self.layout, self.tok, self._codec = layout, tokenizer, codec
        self._clones: dict = {}  # prompt wav -> its ids (engine.teachers.lm.clone_turn)
        self.corpus_codec: str | None = None  # set by Corpus.load: the runs' codec version
        self.corpus_codec_spec: str | None = None  # and the --codec they were made with (run.json)

    @property
    def codec(self):
        if self._codec is None:  # the runs' own codec (e.g. stepaudio:DIR), else the shipped one
            self._codec = load_codec(self.corpus_codec_spec or "melvq")
        if self.corpus_codec and self._codec.version != self.corpus_codec:
            raise DataError(f"the runs were tokenized by {self.corpus_codec}; their clone prompts "
                            f"cannot be tokenized the same way with {self._codec.version}")
        return self._codec

    def clone_prompt(self, task: Task) -> ClonePrompt | None:
        """The clone turn exactly as the LM teachers build it, in the student's layout."""
        return clone_turn(task, self.layout, lambda: self.codec, self._clones)

    def prompt(self, task: Task) -> list[int]:
        return build_tts_prompt(task.text, Instruction.of(task), self.tok, self.clone_prompt(task))

    def length(self, row: Row) -> int:
        """Sequence length of ``row`` without reading its sample (prompt + audio + EOT)."""
        return len(self.prompt(row.task)) + row.n_tokens - row.n_tokens % 5 + 1

    def prefix(self, row: Row) -> tuple[str, int]:
        """(digest, length) of the row's system turn: rows with the same digest share it."""
        ids = self.prompt(row.task)
        n = self.prefix_length(ids)
        return hashlib.sha256(np.asarray(ids[:n], np.int64).tobytes()).hexdigest()[:16], n

    def prefix_length(self, ids) -> int:
        """Length of ``[bos] [BOT] system ... [EOT]`` at the start of a prompt."""
        return list(ids).index(self.tok.eot) + 1

    def to_student(self, ids: np.ndarray) -> np.ndarray:
        """Step-Audio ids -> the student's ids (audio moves, EOT and text stay); -1 stays -1."""
        return convert_layout(ids, STEP_AUDIO, self.layout)

    def audio_ids(self, row: Row, tokens: np.ndarray) -> np.ndarray:
        """The row's audio ids in the student's layout, whole 2:3 groups, EOT stripped."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) and tokens[-1] == self.tok.eot:
            tokens = tokens[:-1]
        tokens = tokens[: len(tokens) - len(tokens) % 5]
        try:
            check_audio_ids(tokens.tolist(), STEP_AUDIO)
        except ValueError as exc:
            raise DataError(f"{row.run} sample {row.task.id}: its tokens are not Step-Audio audio ids "
                            f"({exc})") from None
        return self.to_student(tokens)

    def build(self, row: Row, sample: dict[str, bytes]) -> Sample:
        """The training sequence for ``row`` from its shard members (``tokens.npy``, ``topk.npz``)."""
        audio = self.audio_ids(row, np.load(io.BytesIO(sample["tokens.npy"])))
        prompt = self.prompt(row.task)
        ids = np.concatenate([np.asarray(prompt, np.int64), audio, [self.tok.eot]])
        labels = np.full(len(ids), IGNORE, np.int64)
        streams = np.full(len(ids), NO_LOSS, np.int8)
        first = len(prompt) - 1  # the position that predicts the first audio id
        labels[first:-1] = ids[first + 1:]
        streams[first:-1] = stream_codes(len(audio))
        out = Sample(row.key, ids, labels, streams, prefix_len=self.prefix_length(prompt))
        if "topk.npz" in sample:
            out.topk_ids, out.topk_logprobs = self._topk(sample["topk.npz"], len(ids), first, len(audio))
        return out

    def _topk(self, data: bytes, n: int, first: int, n_audio: int):
        """Teacher top-k of each generated token, placed at the positions that predict them;
        candidates outside the student's audio ids and EOT become empty slots (-1)."""
        z = np.load(io.BytesIO(data))
        tids = self.to_student(z["ids"][: n_audio + 1])
        tlp = z["logprobs"][: n_audio + 1].astype(np.float32)
        ok = ((tids >= self.layout.vq02_offset) & (tids < self.layout.audio_end)) | (tids == self.tok.eot)
        k = tids.shape[1]
        ids = np.full((n, k), -1, np.int64)
        lps = np.zeros((n, k), np.float32)
        ids[first:first + len(tids)] = np.where(ok, tids, -1)
        lps[first:first + len(tids)] = np.where(ok, tlp, 0.0)
        return ids, lps


# -- the corpus ------------------------------------------------------------------------------

@dataclass
class Corpus:
    """Accepted rows of one or more runs, each with its sequence length."""

    rows: list[Row]
    lengths: list[int]
    builder: SequenceBuilder
    codec_version: str
    prefixes: list[tuple[str, int]] = field(default_factory=list)  # SequenceBuilder.prefix

    @classmethod
    def load(cls, runs: list[str | Path], builder: SequenceBuilder) -> "Corpus":
        rows, versions, specs = [], {}, []
        for run in runs:
            got, info = _accepted_rows(Path(run))
            versions[str(run)] = info.get("codec")
            specs.append(info.get("codec_spec"))
            rows += got
        if len(set(versions.values())) > 1:
            raise DataError(f"the runs were tokenized by different codecs ({versions}); their "
                            "audio ids mean different things")
        builder.corpus_codec = version = next(iter(versions.values()))
        builder.corpus_codec_spec = next((s for s in specs if s), None)
        seen: set[str] = set()
        unique = [r for r in rows if not (r.key in seen or seen.add(r.key))]
        return cls(unique, [builder.length(r) for r in unique], builder, version,
                   [builder.prefix(r) for r in unique])

    def __len__(self) -> int:
        return len(self.rows)

    def split(self, heldout: int, seed: int = 0, previous: "PreviousSplit | None" = None
              ) -> tuple["Corpus", "Corpus"]:
        """(train, heldout): about ``heldout`` rows whose texts never occur in train (chosen by
        hash). With ``previous`` (the split of the student this one continues), its held-out
        texts stay held out and only texts it never saw are added, up to ``heldout`` rows."""
        def rank(text: str) -> str:
            return hashlib.sha256(f"{seed}:{text}".encode()).hexdigest()

        texts = sorted({r.task.text for r in self.rows}, key=rank)
        held: set[str] = set()
        if previous is not None and heldout:
            held = {t for t in texts if text_digest(t) in previous.heldout}
            texts = [t for t in texts if previous.seen is not None and text_digest(t) not in previous.seen]
        count = sum(r.task.text in held for r in self.rows)
        for text in texts:
            if count >= heldout:
                break
            held.add(text)
            count += sum(r.task.text == text for r in self.rows)
        pick = [r.task.text in held for r in self.rows]
        if heldout and all(pick):
            raise DataError(f"holding out {heldout} rows leaves nothing to train on "
                            f"({len(self.rows)} accepted rows); lower eval.heldout")
        return self._subset([not p for p in pick]), self._subset(pick)

    def _subset(self, mask: list[bool]) -> "Corpus":
        rows = [r for r, m in zip(self.rows, mask) if m]
        lengths = [n for n, m in zip(self.lengths, mask) if m]
        prefixes = [p for p, m in zip(self.prefixes, mask) if m]
        return Corpus(rows, lengths, self.builder, self.codec_version, prefixes)

    def write_prompts(self, path: str | Path) -> None:
        """The rows as ``stepforge eval`` prompts: task fields plus the teacher's scores."""
        lines = []
        for r in self.rows:
            lines.append(json.dumps({**r.task.to_row(), "teacher": {"run": r.run, **r.scores}},
                                    ensure_ascii=False))
        with atomic_path(path) as tmp:
            Path(tmp).write_text("\n".join(lines) + "\n", encoding="utf-8")


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_split(path: str | Path, train: Corpus, heldout: Corpus) -> None:
    """Record which texts ``heldout`` and ``train`` hold (digests), for :class:`PreviousSplit`."""
    data = {"heldout": sorted({text_digest(r.task.text) for r in heldout.rows}),
            "train": sorted({text_digest(r.task.text) for r in train.rows})}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data) + "\n", encoding="utf-8")


@dataclass(frozen=True)
class PreviousSplit:
    """The split of a student another continues from: its held-out text digests, and every text
    it saw (held out or trained on; None when unknown: then no text joins the held-out set)."""

    heldout: frozenset
    seen: frozenset | None

    @classmethod
    def read(cls, student: str | Path | None) -> "PreviousSplit | None":
        """The split of STUDENT from its split.json, else (students made before it was written)
        the texts of its heldout.jsonl; None for a dir with neither (an exported checkpoint)."""
        if not student:
            return None
        path, prompts = Path(student) / SPLIT_FILE, Path(student) / "heldout.jsonl"
        try:
            if path.is_file():
                data = json.loads(path.read_text(encoding="utf-8"))
                return cls(frozenset(data["heldout"]), frozenset(data["heldout"]) | frozenset(data["train"]))
            if prompts.is_file():
                lines = prompts.read_text(encoding="utf-8").splitlines()
                return cls(frozenset(text_digest(json.loads(line)["text"]) for line in lines if line.strip()), None)
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"student.init {student}: unreadable held-out split ({exc})") from None
        return None


# -- epochs ------------------------------------------------------------------------------------

class PackPlan:
    """The deterministic order and packing of a corpus, epoch by epoch.

    Args:
        corpus: the training rows.
        max_tokens: tokens per packed row (one micro-batch); every sequence must fit.
        seed: with the epoch number, fixes the order.
        buffer: samples shuffled together after the shard-level shuffle.
        share_prefix: pack sequences with the same system turn together and place the turn once
            per pack (see the module docstring).
    """

    def __init__(self, corpus: Corpus, max_tokens: int, seed: int = 0, buffer: int = 256,
                 share_prefix: bool = False):
        longest = max(corpus.lengths, default=0)
        if longest > max_tokens:
            i = corpus.lengths.index(longest)
            raise DataError(f"sequence {corpus.rows[i].key} has {longest} tokens, more than "
                            f"data.max_tokens={max_tokens}; raise data.max_tokens")
        self.corpus, self.max_tokens, self.seed, self.buffer = corpus, max_tokens, seed, buffer
        self.share_prefix = share_prefix
        if share_prefix and len(corpus.prefixes) != len(corpus.rows):
            raise ValueError("share_prefix needs the corpus' prefixes (Corpus.load computes them)")
        self._cache: dict[int, list[list[int]]] = {}

    def order(self, epoch: int) -> list[int]:
        """Row indices of ``epoch``: shards shuffled, then samples within a moving buffer."""
        rng = random.Random(f"{self.seed}:{epoch}")
        by_shard: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(self.corpus.rows):
            by_shard.setdefault((r.run, r.shard), []).append(i)
        shards = sorted(by_shard)
        rng.shuffle(shards)
        out, buf = [], []
        for s in shards:
            for i in by_shard[s]:
                buf.append(i)
                if len(buf) >= self.buffer:
                    out.append(buf.pop(rng.randrange(len(buf))))
        rng.shuffle(buf)
        return out + buf

    def packs(self, epoch: int) -> list[list[int]]:
        """Greedy packs of row indices in epoch order, each at most ``max_tokens`` long."""
        if epoch not in self._cache:
            self._cache = {epoch: self._shared_packs(epoch) if self.share_prefix else self._packs(epoch)}
        return self._cache[epoch]

    def _packs(self, epoch: int) -> list[list[int]]:
        packs, cur, size = [], [], 0
        for i in self.order(epoch):
            n = self.corpus.lengths[i]
            if cur and size + n > self.max_tokens:
                packs.append(cur)
                cur, size = [], 0
            cur.append(i)
            size += n
        if cur:
            packs.append(cur)
        return packs

    def _shared_packs(self, epoch: int) -> list[list[int]]:
        """One open pack per system turn; a pack costs its turn once plus each sequence's rest.
        Packs come out in the order they fill, then the open ones in the order they opened."""
        packs, open_ = [], {}
        for i in self.order(epoch):
            key, p = self.corpus.prefixes[i]
            rest = self.corpus.lengths[i] - p
            cur = open_.get(key)
            if cur is not None and cur[1] + rest > self.max_tokens:
                packs.append(open_.pop(key)[0])
                cur = None
            if cur is None:
                cur = open_[key] = [[], p]
            cur[0].append(i)
            cur[1] += rest
        return packs + [cur[0] for cur in open_.values()]

    def steps_per_epoch(self, world: int = 1) -> int:
        """Packs each rank takes per epoch."""
        return len(self.packs(0)) // world

    def batches(self, epoch: int, rank: int = 0, world: int = 1, start: int = 0):
        """Yield this rank's packed batches of ``epoch`` from its ``start``-th on (see
        :func:`collate`)."""
        packs = self.packs(epoch)
        mine = packs[rank: len(packs) - len(packs) % world: world]
        for pack in mine[start:]:
            yield collate([self.sample(i) for i in pack], self.share_prefix)

    def sample(self, i: int) -> Sample:
        row = self.corpus.rows[i]
        return self.corpus.builder.build(row, load_sample(row))


def collate(samples: list[Sample], share_prefix: bool = False) -> dict:
    """Pack samples into one row.

    Args:
        share_prefix: the samples start with the same system turn (``Sample.prefix_len``): it
            goes first, once, and each sample keeps only the rest (positions continue from it).
    Returns:
        ``input_ids`` / ``labels`` long ``[1, total]``, ``streams`` int8 ``[1, total]``,
        ``positions`` long ``[1, total]`` (restarting at 0 per sequence), ``cu_seqlens`` int32
        ``[n + 1]``, ``shared_prefix`` (the first segment's length when it is shared, else 0),
        ``ids`` (sample ids) and, when every sample has them, ``topk_ids`` long /
        ``topk_logprobs`` float ``[1, total, k]``.
    """
    p = samples[0].prefix_len if share_prefix and samples else 0
    for s in samples if p else ():
        same = s.prefix_len == p and np.array_equal(s.input_ids[:p], samples[0].input_ids[:p])
        if not same or (s.labels[:p] != IGNORE).any():
            raise ValueError(f"{s.id} does not share the pack's {p}-token system turn")
    # (sample, slice) per packed segment: the shared turn once, then the rest of each sample.
    segments = ([(samples[0], slice(0, p))] if p else []) + [(s, slice(p, len(s))) for s in samples]
    lens = [sl.stop - sl.start for _, sl in segments]

    def cat(name: str, k: int | None = None) -> torch.Tensor:
        parts = [getattr(s, name)[sl] if k is None else getattr(s, name)[sl, :k] for s, sl in segments]
        return torch.from_numpy(np.concatenate(parts))[None]

    batch = {
        "input_ids": cat("input_ids"),
        "labels": cat("labels"),
        "streams": cat("streams"),
        "positions": torch.from_numpy(np.concatenate([np.arange(sl.start, sl.stop) for _, sl in segments]))[None],
        "cu_seqlens": torch.from_numpy(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)),
        "shared_prefix": p,
        "ids": [s.id for s in samples],
    }
    if samples and all(s.topk_ids is not None for s in samples):
        k = min(s.topk_ids.shape[1] for s in samples)
        batch["topk_ids"], batch["topk_logprobs"] = cat("topk_ids", k), cat("topk_logprobs", k)
    return batch
