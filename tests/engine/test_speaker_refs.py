"""Built-in speaker prompts are stored by name (``builtin:amy.wav``) and resolved where they are
read; runs made before, which stored the absolute path of another checkout, keep working."""
from __future__ import annotations

import shutil

import pytest

from engine.codec import load_codec
from engine.speakers import BUILTIN_SPEAKERS, load_speakers, prompt_path, prompt_ref
from engine.spec import GenerationSpec
from engine.task import Task
from engine.teachers.lm import clone_turn
from engine.tokens import STEP_AUDIO

MOVED = "/tmp/moved-checkout/engine/data/speakers/amy.wav"  # the packaged prompt of a checkout gone


def test_builtin_prompts_are_stored_by_name_and_resolved_at_use():
    amy = str(BUILTIN_SPEAKERS / "amy.wav")
    assert prompt_ref(amy) == "builtin:amy.wav"
    assert prompt_path("builtin:amy.wav") == amy
    assert prompt_path(MOVED, "amy") == amy
    assert next(s for s in load_speakers("builtin") if s.name == "amy").ref == "builtin:amy.wav"


@pytest.mark.parametrize("stored, speaker", [
    (MOVED, "ben"),                                   # not that speaker's prompt
    ("/tmp/moved-checkout/voices/amy.wav", "amy"),    # a user's folder: never swapped for a built-in
    ("/tmp/moved-checkout/engine/data/speakers/zed.wav", "zed"),  # not a built-in
    ("builtin:../speakers.py", ""),                   # no path out of the package's prompts
    ("builtin:", ""),
    ("/home/me/voices/amy.wav", ""),
    ("", "amy"),
])
def test_other_paths_stay_as_stored(stored, speaker):
    assert prompt_path(stored, speaker) == stored


def test_user_prompts_keep_their_path(tmp_path):
    wav = tmp_path / "amy.wav"
    shutil.copy(BUILTIN_SPEAKERS / "amy.wav", wav)
    (tmp_path / "amy.txt").write_text("A user's own prompt.")
    (speaker,) = load_speakers(tmp_path)
    assert speaker.ref == str(wav.resolve()) == prompt_path(speaker.ref, "amy")


def test_spec_tasks_name_builtin_prompts(tmp_path):
    spec = tmp_path / "clone.yaml"
    spec.write_text("count: 8\ntexts: [{builtin: [en], limit: 8}]\nclone: {speakers: builtin, share: 1.0}\n")
    tasks = GenerationSpec.load(spec).expand()
    assert tasks and all(t.speaker and t.speaker_wav == f"builtin:{t.speaker}.wav" for t in tasks)


def test_clone_turn_of_a_moved_absolute_path_is_the_builtin_prompt():
    text = (BUILTIN_SPEAKERS / "amy.txt").read_text(encoding="utf-8").strip()
    codec = load_codec("melvq")
    turns = [clone_turn(Task("t", "Hello.", "en", dialect="english", speaker="amy", speaker_wav=wav,
                             speaker_text=text), STEP_AUDIO, lambda: codec, {})
             for wav in ("builtin:amy.wav", MOVED, str(BUILTIN_SPEAKERS / "amy.wav"))]
    assert turns[0].audio_ids and turns[0] == turns[1] == turns[2]
