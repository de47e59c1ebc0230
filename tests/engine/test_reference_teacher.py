"""The reference teacher: instruction control measured on the audio it renders."""
import numpy as np
import pytest

from engine.audio import SAMPLE_RATE
from engine.prosody_measure import f0_stats, f0_track, onset_cv, onsets, speech_seconds
from engine.speakers import BUILTIN_SPEAKERS
from engine.task import Task
from engine.teachers import ReferenceTeacher, Teacher, TeacherOutput, make_teacher
from engine.teachers.builtin_speakers import SPEAKERS
from engine.teachers.dialects import sichuanese_phonemes

EN = "She walked along the river every morning, watching the boats drift slowly by."
ZH = "今天天气很好，我们一起去公园散步吧。"
RAP = "Money on my mind and the city never sleeps, we keep on moving to the rhythm of the streets."


@pytest.fixture(scope="module")
def teacher():
    return ReferenceTeacher()


def task(**fields):
    row = {"id": "t", "text": EN, "lang": "en", "dialect": "english", "seed": 3, **fields}
    return Task(**row)


def measure(teacher, **fields):
    wav, info = teacher.render(task(**fields))
    assert wav.dtype == np.float32 and wav.ndim == 1
    return {**f0_stats(wav, SAMPLE_RATE), "seconds": speech_seconds(wav, SAMPLE_RATE), "info": info}


def strictly(values, increasing=True):
    steps = np.diff(values)
    return bool(np.all(steps > 0) if increasing else np.all(steps < 0))


@pytest.mark.parametrize("emotion, up", [("happy", True), ("sad", False)])
def test_intensity_moves_pitch_range_and_rate_monotonically(teacher, emotion, up):
    neutral = measure(teacher)
    levels = [measure(teacher, emotion=emotion, intensity=k) for k in range(1, 6)]
    medians = [neutral["median"]] + [m["median"] for m in levels]
    spreads = [neutral["spread"]] + [m["spread"] for m in levels]
    seconds = [neutral["seconds"]] + [m["seconds"] for m in levels]
    assert strictly(medians, up), medians
    assert strictly(spreads, up) if up else spreads[-1] < 0.5 * spreads[0], spreads
    assert strictly(seconds, not up), seconds  # happy speeds up, sad slows down


def test_emotions_move_pitch_in_opposite_directions(teacher):
    neutral = measure(teacher)["median"]
    for emotion in ("happy", "angry", "surprised", "coquettish"):
        assert measure(teacher, emotion=emotion, intensity=5)["median"] > neutral * 1.15, emotion
    for emotion in ("sad", "calm"):
        assert measure(teacher, emotion=emotion, intensity=5)["median"] < neutral * 0.9, emotion
    angry, sad = measure(teacher, emotion="angry", intensity=5), measure(teacher, emotion="sad", intensity=5)
    assert angry["seconds"] < measure(teacher)["seconds"] < sad["seconds"]


@pytest.mark.parametrize("text, lang, dialect", [(EN, "en", "english"), (ZH, "zh", "mandarin")])
def test_speed_tags_order_durations(teacher, text, lang, dialect):
    speeds = ["slow2", "slow1", "normal", "fast1", "fast2"]
    seconds = [measure(teacher, text=text, lang=lang, dialect=dialect, speed=s)["seconds"] for s in speeds]
    assert strictly(seconds, increasing=False), seconds
    assert seconds[0] > 2 * seconds[-1]


def _mfcc_mean(wav):
    import librosa

    return librosa.feature.mfcc(y=wav, sr=SAMPLE_RATE, n_mfcc=20).mean(axis=1)


def test_dialects_select_distinct_voices_and_audio(teacher):
    rows = {d: (EN, "en") for d in ("english-us", "english-gb", "english-scottish", "english-caribbean")}
    rows.update({d: (ZH, "zh") for d in ("mandarin", "cantonese", "sichuanese")})
    rows.update(japanese=("きょうはとてもいいてんきですね。", "ja"), korean=("오늘은 날씨가 정말 좋네요.", "ko"))
    rendered = {d: teacher.render(task(dialect=d, text=t, lang=lang)) for d, (t, lang) in rows.items()}
    voices = {d: info["voice"] for d, (_, info) in rendered.items()}
    assert voices["english-gb"] != voices["english-us"] != voices["english-scottish"] != voices["english-caribbean"]
    assert len({voices[d] for d in ("mandarin", "cantonese", "japanese", "korean")}) == 4
    feats = {d: _mfcc_mean(wav) for d, (wav, _) in rendered.items()}
    for group in (["english-us", "english-gb", "english-scottish", "english-caribbean"],
                  ["mandarin", "cantonese", "sichuanese"]):
        for i, a in enumerate(group):
            for b in group[i + 1:]:
                assert np.linalg.norm(feats[a] - feats[b]) > 1.0, (a, b)


def test_sichuanese_stand_in_rewrites_mandarin_phonemes():
    # 是四川人 能 老: retroflexes -> dentals, -eng -> -en, l- -> n-, T3 <-> T4, T2 -> low
    got = sichuanese_phonemes("s.'i.51_| ts.h'ua55n_| z.'@35n_| n'@35N_| l'Au214_|")
    assert got == "s'i[214_| tsh'ua55n_| z'@11n_| n'@11n_| n'Au51_|"


def test_japanese_kanji_are_read_as_kana(teacher):
    pytest.importorskip("pykakasi")
    kanji = teacher.render(task(dialect="japanese", lang="ja", text="今日は良い天気です。"))[0]
    assert speech_seconds(kanji, SAMPLE_RATE) < 3.0  # eSpeak alone says "Chinese letter" per kanji


def test_rap_lands_on_a_regular_beat(teacher):
    wav, info = teacher.render(task(text=RAP, style="rap"))
    speech, _ = teacher.render(task(text=RAP))
    times = onsets(wav, SAMPLE_RATE)
    assert len(times) >= 0.8 * info["beats"]
    gaps = np.diff(times)
    assert abs(np.median(gaps) - info["beat_s"]) < 0.02
    # onsets sit on the grid; any gap is a whole number of beats
    assert np.abs(gaps / info["beat_s"] - np.round(gaps / info["beat_s"])).max() < 0.15
    assert onset_cv(wav, SAMPLE_RATE) < 0.1 < onset_cv(speech, SAMPLE_RATE)
    zh, zh_info = teacher.render(task(text=ZH, lang="zh", dialect="mandarin", style="rap", speed="fast1"))
    assert zh_info["beat_s"] < info["beat_s"] and onset_cv(zh, SAMPLE_RATE) < 0.1


def test_humming_sings_a_seeded_melody(teacher):
    wav, info = teacher.render(task(style="humming", seed=5))
    semis = 12 * np.log2(f0_track(wav, SAMPLE_RATE) / info["tonic_hz"])
    notes = set(np.round(semis[np.abs(semis - np.round(semis)) < 0.3]).astype(int))
    assert len(notes & set(info["notes"])) >= 3
    assert teacher.render(task(style="humming", seed=6))[1]["notes"] != info["notes"]


def test_same_task_same_audio_even_after_other_work(teacher):
    first, _ = teacher.render(task(emotion="happy", intensity=2, seed=11))
    teacher.render(task(text="Something else entirely, to move eSpeak's internal state.", seed=1))
    again, _ = teacher.render(task(emotion="happy", intensity=2, seed=11))
    other, _ = teacher.render(task(emotion="happy", intensity=2, seed=12))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_clone_recovers_the_prompt_voice(teacher, tmp_path):
    import soundfile as sf

    from engine.espeak import render
    from engine.teachers.isolate import pristine

    cases = [(sp.name, sp.variant, sp.pitch, str(BUILTIN_SPEAKERS / f"{sp.name}.wav"), sp.text)
             for sp in SPEAKERS if sp.voice.startswith("en")]
    for variant, pitch in (("m2", 70), ("f1", 25)):
        text = "Six spoons of fresh snow peas and five thick slabs of blue cheese."
        wav, sr = pristine(render, text, voice=f"en-us+{variant}", pitch=pitch)
        sf.write(tmp_path / f"{variant}.wav", wav, sr)
        cases.append((variant, variant, pitch, str(tmp_path / f"{variant}.wav"), text))
    for name, variant, pitch, path, text in cases:
        _, info = teacher.render(task(speaker=name, speaker_wav=path, speaker_text=text))
        assert info["clone"]["variant"] == variant, (name, info["clone"])
        assert abs(info["clone"]["pitch"] - pitch) <= 12, (name, info["clone"])
        assert info["voice"] == f"en-us+{variant}"
    # a built-in speaker named without its prompt path, speaking another language
    _, info = teacher.render(task(speaker="amy", text=ZH, lang="zh", dialect="cantonese"))
    assert info["voice"] == "yue+f2"


class TokenCountCodec:
    """Stands in for the codec's tokenize: 41.67 ids per second of audio, all vq02 id 65536."""

    def tokenize(self, wav):
        return np.full(int(len(wav) / SAMPLE_RATE / 0.12) * 5, 65536, dtype=np.int64)


def test_synthesize_outputs_one_row_per_task_and_reports_errors():
    teacher = ReferenceTeacher(codec=TokenCountCodec())
    good, bad_lang, empty = task(id="a"), task(id="b", text=ZH, lang="zh"), task(id="c", text="  ")
    outs = teacher.synthesize([good, bad_lang, empty, task(id="d", speaker="../nobody")])
    assert [o.task_id for o in outs] == ["a", "b", "c", "d"]
    assert "not built in" in outs[3].error
    assert isinstance(outs[0], TeacherOutput) and not outs[0].error
    assert outs[0].tokens.dtype == np.int32 and len(outs[0].tokens) % 5 == 0
    assert outs[0].source_audio is not None and outs[0].info["voice"] == "en-us"
    assert "english reads en text, got zh" in outs[1].error and outs[1].tokens is None
    assert "empty text" in outs[2].error


def test_synthesize_with_the_real_codec():
    from engine.codec import load_codec

    codec = load_codec("melvq")
    [out] = ReferenceTeacher(codec=codec).synthesize([task(id="real")])
    assert not out.error, out.error
    from engine.tokens import check_audio_ids

    check_audio_ids(out.tokens)
    assert len(out.tokens) > 0


def test_make_teacher():
    teacher = make_teacher("reference")
    assert isinstance(teacher, Teacher) and teacher.id.startswith("reference@1.")
    assert teacher.resources == {"num_cpus": 1, "num_gpus": 0}
    with pytest.raises(ValueError, match="unknown teacher"):
        make_teacher("espeak")
