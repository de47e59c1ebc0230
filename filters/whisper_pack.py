"""Packing several short utterances into one 30 s Whisper window, and splitting the text back.

    windows = plan_windows([2.1, 3.4, 1.2], gap_s=1.0, window_s=30.0)   # -> [[0, 1, 2]]
    audio, spans = lay_out([wav0, wav1, wav2], gap_s=1.0)             # spans: [(start_s, end_s)]
    texts = split_words(word_times(model, tok, enc, [tokens], [frames])[0], spans)

Timed segments that each fall inside one utterance are handed to it directly; a window with a
segment running over two utterances is split word by word instead, each word going to the span that
holds its midpoint from Whisper's cross-attention alignment.
"""
from __future__ import annotations

import numpy as np

SR = 16000
FRAMES_PER_S = 100  # mel frames
TOKENS_PER_S = 50  # encoder positions (stride 2)


def plan_windows(durations: list[float], gap_s: float, window_s: float) -> list[list[int]]:
    """Group utterance indices into windows of at most ``window_s`` seconds (each utterance
    padded by ``gap_s``), longest first so windows fill evenly; order within a window is kept."""
    windows, used = [], []
    for i in sorted(range(len(durations)), key=lambda i: -durations[i]):
        need = durations[i] + gap_s
        for k, total in enumerate(used):
            if total + need <= window_s:
                windows[k].append(i)
                used[k] += need
                break
        else:
            windows.append([i])
            used.append(need)
    return [sorted(w) for w in windows]


def lay_out(wavs: list[np.ndarray], gap_s: float) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Concatenate with ``gap_s / 2`` of silence either side of each; returns the audio
    ``float32 [samples]`` and each utterance's (start, end) in seconds."""
    pad = np.zeros(int(gap_s * SR / 2), np.float32)
    parts, spans, pos = [], [], 0
    for w in wavs:
        parts += [pad, np.asarray(w, np.float32), pad]
        spans.append(((pos + len(pad)) / SR, (pos + len(pad) + len(w)) / SR))
        pos += 2 * len(pad) + len(w)
    return np.concatenate(parts), spans


def word_times(model, tok, encoded, token_lists: list[list[int]], num_frames: list[int]) -> list[list[tuple[str, float]]]:
    """Per window, [(word text, midpoint seconds)] from the decoder's alignment heads.

    Args:
        model: faster_whisper.WhisperModel. tok: its Tokenizer. encoded: encoder output
            ``[windows, 1500, d]``. token_lists: decoded text ids per window (no timestamps).
        num_frames: mel frames of real audio per window.
    """
    results = model.model.align(encoded, tok.sot_sequence, token_lists, num_frames)
    out = []
    for res, tokens in zip(results, token_lists):
        words, word_tokens = tok.split_to_word_tokens(list(tokens) + [tok.eot])
        if len(word_tokens) <= 1 or not res.alignments:
            out.append([])
            continue
        text_idx = np.array([a for a, _ in res.alignments])
        time_idx = np.array([b for _, b in res.alignments])
        jumps = np.r_[True, np.diff(text_idx) != 0]  # first frame of each token
        token_start = time_idx[jumps] / TOKENS_PER_S
        bounds = np.cumsum([0] + [len(t) for t in word_tokens[:-1]])
        starts, ends = token_start[bounds[:-1]], token_start[np.minimum(bounds[1:], len(token_start) - 1)]
        out.append(_glue_punctuation([(w, (s + e) / 2) for w, s, e in zip(words[:-1], starts, ends)]))
    return out


def _glue_punctuation(words: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """A bare "." or "?" is often aligned late, into the gap: it belongs to the word before it."""
    out = []
    for word, mid in words:
        if out and not word.startswith(" ") and not any(ch.isalnum() for ch in word):
            out[-1] = (out[-1][0] + word, out[-1][1])
        else:
            out.append((word, mid))
    return out


def timed_segments(ids: list[int], tok) -> list[tuple[float, float, str]]:
    """Timestamp-mode token ids -> [(start_s, end_s, text)] segments."""
    segments, start, text_ids = [], None, []
    for t in ids:
        if t < tok.eot:
            text_ids.append(t)
        elif t >= tok.timestamp_begin:
            time = (t - tok.timestamp_begin) * 0.02
            if start is None:
                start = time
            else:
                segments.append((start, time, tok.decode(text_ids)))
                start, text_ids = None, []
    if text_ids:  # an unterminated last segment
        segments.append((start or 0.0, float("inf"), tok.decode(text_ids)))
    return segments


def split_segments(segments: list[tuple[float, float, str]], spans: list[tuple[float, float]],
                   slack_s: float = 0.1) -> list[str] | None:
    """Texts per span when every segment lies within one span (up to ``slack_s`` of overlap
    with any other), else None: then words must be placed one by one (:func:`word_times`)."""
    texts = [[] for _ in spans]
    for start, end, text in segments:
        overlaps = sorted((min(end, b) - max(start, a), k) for k, (a, b) in enumerate(spans))
        if overlaps[-1][0] <= 0 or (len(overlaps) > 1 and overlaps[-2][0] > slack_s):
            return None
        texts[overlaps[-1][1]].append(text.strip())
    return [" ".join(t for t in parts if t) for parts in texts]


def split_words(words: list[tuple[str, float]], spans: list[tuple[float, float]]) -> list[str]:
    """Give each word to the span that holds its midpoint, else the nearest span."""
    texts = [""] * len(spans)
    for word, mid in words:
        k = min(range(len(spans)), key=lambda k: max(spans[k][0] - mid, mid - spans[k][1], 0.0))
        texts[k] += word
    return [t.strip() for t in texts]
