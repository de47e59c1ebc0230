import json

import numpy as np
import pytest
import soundfile as sf

from engine.speakers import Speaker, load_speakers, resolve_folder
from engine.spec import SpecError

SR = 16000


def tone(seconds=1.0, amp=0.2, seed=0):
    t = np.arange(int(seconds * SR)) / SR
    noise = np.random.default_rng(seed).standard_normal(t.size) * 0.01
    return (amp * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def add_speaker(folder, name, wav=None, text="A short prompt sentence.", fmt="wav"):
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / f"{name}.{fmt}", tone() if wav is None else wav, SR)
    if text is not None:
        (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder / f"{name}.{fmt}"


def one_line_error(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for part in parts:
        assert str(part) in msg, (part, msg)


def test_pairs_load_sorted_with_absolute_paths(tmp_path):
    add_speaker(tmp_path, "zed", text="  Second   speaker.\n")
    add_speaker(tmp_path, "amy", fmt="flac", text="第一个说话人。")
    (tmp_path / "README.txt").write_text("not a speaker")
    speakers = load_speakers(tmp_path)
    assert [s.name for s in speakers] == ["amy", "zed"]
    assert speakers[0].wav_path.endswith("amy.flac") and speakers[0].wav_path.startswith("/")
    assert speakers[1].text == "Second speaker."


def test_jsonl_folder(tmp_path):
    add_speaker(tmp_path / "audio", "p1", text=None)
    rows = [{"wav": "audio/p1.wav", "text": "Hello there."}, {"name": "other", "wav": "audio/p1.wav", "text": "Hi."}]
    (tmp_path / "speakers.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    speakers = load_speakers(tmp_path)
    assert [(s.name, s.text) for s in speakers] == [("other", "Hi."), ("p1", "Hello there.")]


def test_wav_hash_follows_content(tmp_path):
    wav = add_speaker(tmp_path, "a")
    before = Speaker("a", str(wav), "x").wav_sha256()
    sf.write(wav, tone(seed=1), SR)
    assert Speaker("a", str(wav), "x").wav_sha256() != before


def test_builtin_name_resolves_to_package_data():
    assert resolve_folder("builtin").parts[-3:] == ("engine", "data", "speakers")


@pytest.mark.parametrize("wav, problem", [
    (np.zeros(SR, dtype=np.float32), "silent"),
    (tone(0.2), "0.20 s long"),
    (tone(31.0), "31.00 s long"),
])
def test_bad_audio_names_the_file(tmp_path, wav, problem):
    path = add_speaker(tmp_path, "bad", wav=wav)
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, path, problem)


def test_corrupt_audio(tmp_path):
    add_speaker(tmp_path, "bad")
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really a wav file")
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "bad.wav", "cannot read audio")


def test_transcript_problems(tmp_path):
    add_speaker(tmp_path, "nt", text=None)
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "nt.wav", "no transcript nt.txt")
    (tmp_path / "nt.txt").write_text("   \n")
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "nt.txt", "empty transcript")
    (tmp_path / "nt.txt").write_bytes(b"ok so far \xff\xfe")
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "nt.txt", "byte offset 10")


def test_folder_problems(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_speakers(tmp_path / "missing")
    with pytest.raises(SpecError, match="no speakers"):
        load_speakers(tmp_path)
    add_speaker(tmp_path, "dup")
    add_speaker(tmp_path, "dup", fmt="flac")
    with pytest.raises(SpecError, match="'dup' also used"):
        load_speakers(tmp_path)


def test_jsonl_problems(tmp_path):
    (tmp_path / "speakers.jsonl").write_text('{"wav": "x.wav", "text": "hi"}\n')
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "speakers.jsonl", "line 1", "x.wav not found")
    (tmp_path / "speakers.jsonl").write_text("{broken\n")
    with pytest.raises(SpecError) as e:
        load_speakers(tmp_path)
    one_line_error(e, "speakers.jsonl", "line 1", "not valid JSON")
