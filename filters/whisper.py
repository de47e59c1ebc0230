"""faster-whisper (CTranslate2) ASR with batching across utterances.

    asr = WhisperASR("tiny.en", pack=True)            # or a CT2 / Hugging Face Whisper dir
    asr.transcribe([wav_a, wav_b], "en")              # float32 [samples] at 16 kHz -> [str, str]

Whisper's encoder always sees a 30 s window, so one short TTS utterance per window wastes most of
the encoder's work, and on CPU the encoder is ~85% of the time. Two modes:

- ``pack=False`` (the seed-tts-eval protocol; use it for reported numbers): one utterance per
  30 s window, ``batch_size`` windows per encoder/decoder call (this pays off on GPU).
- ``pack=True`` (the embedded CPU default): utterances are laid end to end with ``pack_gap_s`` of
  silence into 30 s windows and decoded with timestamps; each timed segment goes back to the
  utterance it falls in or, in a window where a segment runs over two utterances, each word by its
  aligned time (:mod:`filters.whisper_pack`). An utterance left empty is decoded again alone.
  About 4x faster than one window per utterance with tiny.en on 2 CPU cores. An utterance's
  transcript can then depend on its neighbours: a segment's timestamps can put one utterance's
  words into the next (or drop them), and a decoding loop on one short clip can run on into its
  neighbours' spans. Decoding an utterance alone is no cure: tiny.en reads a 2 s clip in 28 s of
  silence worse on average than in context. ``recheck`` has the CER filter read a row a second
  time, alone in its window (:meth:`WhisperASR.transcribe_alone`), and score the better of the two
  reads: every row it would reject (``"rejects"``, the embedded default), or every row (``"all"``,
  what ``stepforge eval`` uses, so that student and teacher rows are read alike).

Utterances longer than a window are transcribed alone with faster-whisper's long-form decoding.
"""
from __future__ import annotations

import os

import numpy as np

from filters.whisper_model import load_whisper, whisper_tools
from filters.whisper_pack import (lay_out, plan_windows, split_segments, split_words, timed_segments,
                                  word_times)
from manifests.errors import UserError

SR = 16000
WINDOW_S = 30.0
RECHECK = (None, "rejects", "all")


def check_recheck(value, name: str) -> None:
    """Raise UserError naming ``name`` unless ``value`` is one of :data:`RECHECK`."""
    if value not in RECHECK:
        raise UserError(f"{name} must be one of null, rejects, all, got {value!r}")


class WhisperASR:
    """Args:
        model: "tiny.en" or "base" (packaged, :mod:`filters.whisper_packages`), or a local CT2 or
            HF Whisper dir.
        beam_size: 1 = greedy. device: "cpu", "cuda" or "auto". compute_type: CT2 type ("int8").
        cpu_threads: CT2 threads per model (default: all cores, at most 4).
        batch_size: 30 s windows per encoder call. pack / pack_gap_s: see the module docstring
            (0.6 s fits eight 2.7 s utterances in one window; WER measured no worse than 1.0 s).
        recheck: with ``pack``, which rows the CER filter reads again alone, scoring the better
            read: None, "rejects" or "all" (see the module docstring).
        cache_dir: where a converted HF model or a joined packaged one is kept (default
            ~/.cache/stepforge/ct2, ~/.cache/stepforge/whisper).
    """

    def __init__(self, model: str = "tiny.en", beam_size: int = 1, device: str = "cpu",
                 compute_type: str = "int8", cpu_threads: int | None = None, batch_size: int = 8,
                 pack: bool = False, pack_gap_s: float = 0.6, recheck: str | None = None,
                 cache_dir: str | None = None):
        check_recheck(recheck, "ASR faster-whisper: recheck")
        self.cpu_threads = cpu_threads or min(os.cpu_count() or 1, 4)
        self.model, self.name = load_whisper(model, device, compute_type, self.cpu_threads, cache_dir)
        self.beam_size, self.batch_size = beam_size, batch_size
        self.pack, self.pack_gap_s = pack, pack_gap_s
        self.recheck = recheck if pack else None
        self._tools = {}

    def supports(self, lang: str) -> bool:
        return lang == "en" or self.model.model.is_multilingual

    def transcribe(self, batch: list[np.ndarray], lang: str) -> list[str]:
        return self._transcribe(batch, lang, self.pack)

    def transcribe_alone(self, batch: list[np.ndarray], lang: str) -> list[str]:
        """As :meth:`transcribe` with one utterance per window, whatever ``pack`` says."""
        return self._transcribe(batch, lang, pack=False)

    def _transcribe(self, batch: list[np.ndarray], lang: str, pack: bool) -> list[str]:
        if not self.supports(lang):
            raise ValueError(f"{self.name} is English-only; it cannot transcribe {lang}")
        out = [""] * len(batch)
        limit = WINDOW_S - (self.pack_gap_s if pack else 0.0)
        short = [i for i, w in enumerate(batch) if len(w) / SR <= limit]
        for i in sorted(set(range(len(batch))) - set(short)):
            out[i] = self._long(batch[i], lang)
        texts = (self._packed if pack else self._single)([batch[i] for i in short], lang)
        for i, text in zip(short, texts):
            out[i] = text
        return out

    def _long(self, wav: np.ndarray, lang: str) -> str:
        # one temperature: no sampling fallback, so looping audio costs one pass, like the rest
        segments, _ = self.model.transcribe(wav, language=lang, beam_size=self.beam_size, temperature=[0.0],
                                            condition_on_previous_text=False)
        return "".join(s.text for s in segments).strip()

    def _single(self, wavs: list[np.ndarray], lang: str) -> list[str]:
        out = []
        for start in range(0, len(wavs), self.batch_size):
            chunk = wavs[start:start + self.batch_size]
            _, results, tok = self._decode(chunk, lang, timestamps=False)
            out += [tok.decode(r.sequences_ids[0]).strip() for r in results]
        return out

    def _packed(self, wavs: list[np.ndarray], lang: str) -> list[str]:
        windows = plan_windows([len(w) / SR for w in wavs], self.pack_gap_s, WINDOW_S)
        out = [""] * len(wavs)
        for start in range(0, len(windows), self.batch_size):
            chunk = windows[start:start + self.batch_size]
            audio, spans = zip(*(lay_out([wavs[i] for i in win], self.pack_gap_s) for win in chunk))
            encoded, results, tok = self._decode(list(audio), lang, timestamps=True)
            texts = self._split(encoded, results, tok, audio, spans)
            for win, r, texts_w in zip(chunk, results, texts):
                full = len(r.sequences_ids[0]) >= self.model.max_length - 8
                # an utterance the window left empty (skipped, or the window ran out of room)
                # is decoded again on its own rather than scored as silence
                redo = [k for k, text in enumerate(texts_w) if full or not any(ch.isalnum() for ch in text)]
                for k, text in zip(redo, self._single([wavs[win[k]] for k in redo], lang)):
                    texts_w[k] = text
                for i, text in zip(win, texts_w):
                    out[i] = text
        return out

    def _split(self, encoded, results, tok, audio, spans) -> list[list[str]]:
        """Per window, one text per utterance: from timed segments where they are unambiguous,
        else from word alignment (one extra decoder pass, only for the windows that need it)."""
        texts = [split_segments(timed_segments(r.sequences_ids[0], tok), span) for r, span in zip(results, spans)]
        hard = [k for k, t in enumerate(texts) if t is None]
        if hard:
            tokens = [[t for t in r.sequences_ids[0] if t < tok.eot] for r in results]
            frames = [min(len(a) // (SR // 100), 3000) for a in audio]
            words = word_times(self.model, tok, encoded, tokens, frames)  # align needs the whole batch
            for k in hard:
                texts[k] = split_words(words[k], spans[k])
        return texts

    def _decode(self, audio: list[np.ndarray], lang: str, timestamps: bool):
        """Encode and greedy/beam decode 30 s windows; returns (encoder output, results, tokenizer)."""
        if lang not in self._tools:
            self._tools[lang] = whisper_tools(self.model, lang)
        tools = self._tools[lang]
        encoded = self.model.encode(np.stack([tools.features(a) for a in audio]))
        prompt = self.model.get_prompt(tools.tokenizer, [], without_timestamps=not timestamps)
        results = self.model.model.generate(
            encoded, [prompt] * len(audio), beam_size=self.beam_size,
            max_length=self.model.max_length, suppress_blank=True, suppress_tokens=tools.suppress)
        return encoded, results, tools.tokenizer
