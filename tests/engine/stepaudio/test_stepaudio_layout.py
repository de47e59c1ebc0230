"""engine.stepaudio.layout: codec specs, the released file layout, missing files, the version."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.errors import MissingModel
from engine.stepaudio import layout
from manifests.errors import UserError


def write_layout(root, seed: int = 0):
    """Every file the layout names, filled with a few random bytes (the layout reads no content)."""
    rng = np.random.default_rng(seed)
    ckpt = layout.StepAudioCheckpoint(root / layout.TOKENIZER_NAME, root / layout.TTS_NAME)
    for _, path in ckpt.files(layout.PARTS):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.bytes(64))
    return ckpt


@pytest.fixture
def model_path(tmp_path):
    write_layout(tmp_path / "models")
    return tmp_path / "models"


def test_model_path_spec(model_path):
    ckpt = layout.resolve(f"stepaudio:{model_path}")
    assert ckpt.tokenizer_dir == model_path / "Step-Audio-Tokenizer"
    assert ckpt.tts_dir == model_path / "Step-Audio-TTS-3B"
    assert ckpt.decoder_dir() == model_path / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz"
    assert ckpt.decoder_dir(music=True) == model_path / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music"
    assert (ckpt.paraformer_dir / "model.pt").is_file()
    assert layout.is_spec(f"stepaudio:{model_path}") and not layout.is_spec("melvq")


def test_two_dirs_spec(model_path):
    tok, tts = model_path / "Step-Audio-Tokenizer", model_path / "Step-Audio-TTS-3B"
    ckpt = layout.resolve(f"stepaudio:{tok},{tts}")
    assert (ckpt.tokenizer_dir, ckpt.tts_dir) == (tok, tts)
    assert ckpt == layout.parse_spec(f"stepaudio:{tok} , {tts}")
    with pytest.raises(UserError, match="TTS dir first"):
        layout.parse_spec(f"stepaudio:{tts},{tok}")


def test_dir_with_a_comma_is_taken_whole(tmp_path):
    write_layout(tmp_path / "a,b")
    assert layout.resolve(f"stepaudio:{tmp_path / 'a,b'}").tts_dir == tmp_path / "a,b/Step-Audio-TTS-3B"


@pytest.mark.parametrize("spec, message", [
    ("stepaudio:", "names no directory"),
    ("stepaudio:  ", "names no directory"),
    ("stepaudio:/no/such/dir", "no such directory"),
    ("stepaudio:/no/a,/no/b", "no such directory"),
    ("stepaudio:a,b,c", "two directories"),
    ("stepaudio:a,", "two directories"),
])
def test_bad_specs(spec, message):
    with pytest.raises(UserError, match=message) as err:
        layout.parse_spec(spec)
    assert "\n" not in str(err.value)


def test_model_path_without_the_tokenizer_dir(model_path):
    shutil.rmtree(model_path / "Step-Audio-Tokenizer")
    with pytest.raises(MissingModel, match="no Step-Audio-Tokenizer/ inside"):
        layout.parse_spec(f"stepaudio:{model_path}")


@pytest.mark.parametrize("role", ["Step-Audio-TTS-3B/CosyVoice-300M-25Hz/hift.pt",
                                  "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music/campplus.onnx",
                                  f"Step-Audio-Tokenizer/{layout.PARAFORMER}/am.mvn",
                                  "Step-Audio-Tokenizer/linguistic_tokenizer.npy"])
def test_missing_file_is_named(model_path, role):
    (model_path / role).unlink()
    with pytest.raises(MissingModel) as err:
        layout.resolve(f"stepaudio:{model_path}")
    msg = str(err.value)
    assert msg.startswith(str(model_path / role)) and "missing" in msg and "\n" not in msg
    assert isinstance(err.value, UserError)


def test_parts_asked_for(model_path):
    (model_path / "Step-Audio-TTS-3B/tokenizer.model").unlink()
    layout.resolve(f"stepaudio:{model_path}")  # the codec does not need the text tokenizer
    with pytest.raises(MissingModel, match="tokenizer.model: missing"):
        layout.resolve(f"stepaudio:{model_path}", parts=("text",))
    with pytest.raises(ValueError, match="unknown checkpoint parts"):
        layout.parse_spec(f"stepaudio:{model_path}").files(("vocoder",))


def test_empty_file(model_path):
    (model_path / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz/flow.pt").write_bytes(b"")
    with pytest.raises(MissingModel, match="flow.pt: empty file"):
        layout.resolve(f"stepaudio:{model_path}")


def test_version_identifies_the_files(tmp_path, model_path):
    version = layout.resolve(f"stepaudio:{model_path}").version()
    assert version.startswith("stepaudio-1+") and len(version) == len("stepaudio-1+") + 12
    moved = tmp_path / "elsewhere"
    shutil.copytree(model_path, moved)
    assert layout.resolve(f"stepaudio:{moved}").version() == version  # location does not count
    music_hift = moved / "Step-Audio-TTS-3B/CosyVoice-300M-25Hz-Music/hift.pt"
    data = bytearray(music_hift.read_bytes())
    data[10] ^= 1
    music_hift.write_bytes(bytes(data))
    changed = layout.resolve(f"stepaudio:{moved}").version()
    assert changed != version
    # the text tokenizer is no part of the codec
    (moved / "Step-Audio-TTS-3B/tokenizer.model").write_bytes(b"other")
    assert layout.resolve(f"stepaudio:{moved}").version() == changed


def test_version_of_other_weights_differs(tmp_path):
    a = write_layout(tmp_path / "a", seed=0).version()
    b = write_layout(tmp_path / "b", seed=1).version()
    assert a != b
