"""Incremental decoding: audio ids in as the LM samples them, audio out as soon as it is settled.

    decoder = StreamDecoder(load_codec())
    for ids in id_pieces:                # any split of an utterance's interleaved ids
        play(decoder.push(ids))          # float32 samples, possibly none yet
    play(decoder.finish())               # the rest

Two stages, each with its own look-ahead:

- log-mel: the decoder net sees ``context[0]`` token groups either side and the smoothing
  reaches ``context[1]`` frames, so a frame is final once the ids that far ahead have arrived.
  The streamed log-mel is the whole-utterance decode's, frame for frame (computed on windows of
  ids rather than all of them, so equal up to float rounding).
- waveform: Griffin-Lim needs a phase, and the whole-utterance decode finds one for all frames
  at once, which a stream cannot wait for. Blocks of ``block`` frames are phased with
  ``overlap`` frames of the previous block (starting from its final phase, for continuity) and
  ``lookahead`` frames after, and joined with a linear cross-fade over the overlap. The first
  block is short (the first audio comes early); blocks then double up to ``max_block``, since
  Griffin-Lim on short blocks costs several times the whole decode's CPU (measured). The waveform
  thus differs from the whole decode in phase, not in magnitude; ``bench/serve_load.py`` measures
  by how much.

Many streams at once (a server): give them one :class:`VocoderBatcher` as their ``vocoder``, which
phases the blocks that are waiting together (:func:`~engine.codec.vocoder.griffin_lim_many`, each
block exactly as alone), in large array operations rather than many small ones.
"""
from __future__ import annotations

import os
import queue
import sys
import threading
from collections import deque
from concurrent.futures import Future

import numpy as np

from engine import tokens

from . import mel
from .vocoder import griffin_lim_from, griffin_lim_many, random_phases

BLOCK = 24      # frames of the first block phased and sent (240 ms); each next block doubles
MAX_BLOCK = 96   # up to this (0.96 s): short blocks for the first audio, longer ones cost less
LOOKAHEAD = 12  # frames after a block that its phasing sees
OVERLAP = 12    # frames of the previous block it starts from, cross-faded


def open_stream(codec, decode=None, vocoder=None):
    """An incremental decoder for ``codec``: its own (``codec.stream_decoder()``, phasing with
    ``vocoder`` when given) where it has one, else a :class:`WholeDecoder` (audio only at the end)
    calling ``decode(ids)`` (default ``codec.detokenize``, e.g. a decode in the request's voice)."""
    make = getattr(codec, "stream_decoder", None)
    return make(vocoder=vocoder) if make is not None else WholeDecoder(decode or codec.detokenize)


def lower_priority(nice: int) -> None:
    """Add ``nice`` to the calling thread's scheduling niceness (Linux schedules threads, so this
    thread alone; elsewhere nothing happens)."""
    tid = threading.get_native_id()
    if nice and sys.platform.startswith("linux"):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


class VocoderBatcher:
    """One thread that phases the waveform blocks of many :class:`StreamDecoder` at once.

    A decoder given ``vocoder=batcher`` hands its block over and waits; a thread takes every
    block waiting (up to ``max_frames`` frames), phases them together and answers each. An idle
    batcher takes a lone block at once, so one stream waits for nothing. The result of each block
    is exactly what :func:`~engine.codec.vocoder.griffin_lim_from` gives it alone.

    ``threads`` batches are phased at once (default: one per core; numpy and the FFTs leave
    Python's lock while they compute, so two threads use two cores). ``nice`` lowers the threads'
    scheduling priority (:func:`lower_priority`), so that work on a server's critical path (the LM
    step) goes first when the cores are busy.
    """

    def __init__(self, max_frames: int = 4096, threads: int | None = None, nice: int = 0):
        threads = threads or len(os.sched_getaffinity(0))
        if max_frames < 1 or threads < 1:
            raise ValueError(f"max_frames and threads must be >= 1, got {max_frames} and {threads}")
        self.max_frames, self.nice = max_frames, nice
        self.batch_sizes: deque[int] = deque(maxlen=1000)  # blocks per batch, the last 1000 (for a bench)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()  # nothing is queued behind the closing sentinel
        self._threads = [threading.Thread(target=self._loop, name=f"stepforge-vocoder-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def __call__(self, magnitude: np.ndarray, angles: np.ndarray, n_samples: int,
                 n_iter: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The :func:`~engine.codec.vocoder.griffin_lim_from` of one block, phased in a batch."""
        done: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the vocoder batcher was closed")
            self._queue.put((magnitude, angles, n_samples, n_iter, done))
        return done.result()

    def close(self) -> None:
        """Stop the threads once the blocks already handed over are phased; later calls raise."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self) -> None:
        lower_priority(self.nice)
        while True:
            first = self._queue.get()
            if first is None:
                break
            jobs, frames = [first], len(first[0])
            while frames < self.max_frames:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # closed: stop after this batch
                    break
                jobs.append(job)
                frames += len(job[0])
            self.batch_sizes.append(len(jobs))
            for n_iter in sorted({job[3] for job in jobs}):
                group = [job for job in jobs if job[3] == n_iter]
                try:
                    results = griffin_lim_many([job[:3] for job in group], n_iter)
                except Exception as exc:  # a bad block fails its own waiters, not the thread
                    for job in group:
                        job[4].set_exception(exc)
                    continue
                for job, result in zip(group, results):
                    job[4].set_result(result)


class WholeDecoder:
    """The stream interface for a codec that decodes whole utterances only: ``push`` keeps the
    ids, ``finish`` decodes them all with ``decode`` (int64 ids -> waveform)."""

    def __init__(self, decode):
        self.decode = decode
        self._ids: list[int] = []

    def push(self, ids) -> np.ndarray:
        self._ids.extend(int(i) for i in np.asarray(ids).reshape(-1))
        return np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        if not self._ids:
            return np.zeros(0, np.float32)
        return np.asarray(self.decode(np.asarray(self._ids, np.int64)), np.float32)


class StreamDecoder:
    """One utterance's incremental decode with a :class:`~engine.codec.codec.MelVQCodec`.

    Args:
        codec: the codec (its decoder net and smoothing set the log-mel look-ahead).
        block, max_block, lookahead, overlap: the waveform stage's sizes, in 10 ms frames.
        n_iter: Griffin-Lim iterations per block (the whole decode's 32 by default).
        vocoder: phases a block: ``(magnitude, angles, n_samples, n_iter) -> (waveform, angles)``;
            default :func:`~engine.codec.vocoder.griffin_lim_from`, or a :class:`VocoderBatcher`.
    """

    def __init__(self, codec, block: int = BLOCK, lookahead: int = LOOKAHEAD, overlap: int = OVERLAP,
                 n_iter: int = 32, max_block: int = MAX_BLOCK, vocoder=None):
        if block < 1 or lookahead < 0 or not 0 <= overlap <= block or max_block < block:
            raise ValueError(f"need block >= 1, lookahead >= 0, 0 <= overlap <= block <= max_block, got "
                             f"{block}, {lookahead}, {overlap}, {max_block}")
        self.codec = codec
        self.first_block, self.max_block = block, max_block
        self.block, self.lookahead, self.overlap, self.n_iter = block, lookahead, overlap, n_iter
        self.vocoder = vocoder or griffin_lim_from
        self.groups_ctx, self.frames_ctx = codec.context
        self._ids: list[int] = []
        self._mel = np.zeros((0, mel.N_MELS), np.float32)
        self._sent = 0          # frames whose samples went out
        self._angles = None     # final phases of the last block, from frame _phase0
        self._phase0 = 0
        self._tail = np.zeros(0, np.float32)  # the last block's samples after _sent (cross-fade)
        self._blocks = 0
        self.finished = False

    @property
    def mel(self) -> np.ndarray:
        """The log-mel frames settled so far."""
        return self._mel

    def push(self, ids) -> np.ndarray:
        """Take more interleaved ids (Step-Audio layout); returns the samples now settled."""
        if self.finished:
            raise ValueError("push after finish")
        self._ids.extend(int(i) for i in np.asarray(ids).reshape(-1))
        return self._advance(final=False)

    def finish(self) -> np.ndarray:
        """The utterance is complete: the remaining samples (ValueError on a partial group)."""
        if len(self._ids) % tokens.GROUP:
            raise ValueError(f"{len(self._ids)} ids are not whole {tokens.GROUP}-id groups")
        out = self._advance(final=True)
        self.finished = True
        return out

    # -- log-mel -----------------------------------------------------------------------------
    def _settled_frames(self, final: bool) -> int:
        groups = len(self._ids) // tokens.GROUP
        if final:
            return groups * mel.FRAMES_PER_GROUP
        return max(0, (groups - self.groups_ctx) * mel.FRAMES_PER_GROUP - self.frames_ctx)

    def _extend_mel(self, final: bool) -> None:
        start, end = len(self._mel), self._settled_frames(final)
        if end <= start:
            return
        fpg, groups = mel.FRAMES_PER_GROUP, len(self._ids) // tokens.GROUP
        # the raw frames the smoothing of [start, end) reads, then the groups their decode reads
        first = max(0, (start - self.frames_ctx) // fpg - self.groups_ctx)
        last = min(groups, -(-(end + self.frames_ctx) // fpg) + self.groups_ctx)
        vq02, vq06 = tokens.deinterleave(np.asarray(self._ids[first * tokens.GROUP:last * tokens.GROUP]))
        window = self.codec.smoothed(self.codec.decode_mel(vq02, vq06, smooth=False))
        self._mel = np.concatenate([self._mel, window[start - first * fpg:end - first * fpg]])

    # -- waveform ----------------------------------------------------------------------------
    def _advance(self, final: bool) -> np.ndarray:
        if not final and self._settled_frames(False) < self._sent + self.block + self.lookahead:
            return np.zeros(0, np.float32)  # not a whole block yet: decode nothing
        self._extend_mel(final)
        out = []
        frames = len(self._mel)
        while True:
            if final:
                if self._sent >= frames:
                    break
                end = min(frames, self._sent + self.block)
                if frames - end < self.block // 2:  # no short last block: take the rest now
                    end = frames
            elif self._sent + self.block + self.lookahead <= frames:
                end = self._sent + self.block
            else:
                break
            out.append(self._phase_block(end, final and end == frames))
            self.block = min(self.max_block, 2 * self.block)
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def _phase_block(self, end: int, last: bool) -> np.ndarray:
        """Phase frames [_sent - overlap, end + lookahead) and send the samples of [_sent, end)."""
        hop = mel.HOP
        start = max(0, self._sent - self.overlap)
        stop = len(self._mel) if last else min(len(self._mel), end + self.lookahead)
        magnitude = mel.mel_to_magnitude(self._mel[start:stop])
        angles = random_phases(magnitude.shape, seed=self._blocks)
        if self._angles is not None:  # continue the previous block's phase where they overlap
            have = self._angles[start - self._phase0:]
            n = min(len(have), len(angles))
            angles[:n] = have[:n]
        wav, self._angles = self.vocoder(magnitude, angles, (stop - start) * hop, self.n_iter)
        self._phase0 = start
        self._blocks += 1
        wav = np.clip(wav, -1.0, 1.0).astype(np.float32)
        new = wav[(self._sent - start) * hop:]
        fade = min(len(self._tail), len(new), self.overlap * hop)
        if fade:
            ramp = np.linspace(0.0, 1.0, fade + 2, dtype=np.float32)[1:-1]
            new[:fade] = (1 - ramp) * self._tail[:fade] + ramp * new[:fade]
        send = (end - self._sent) * hop
        out, self._tail = new[:send].copy(), new[send:].copy()
        self._sent = end
        return out
