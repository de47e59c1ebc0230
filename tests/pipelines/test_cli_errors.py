"""How the CLI reports failures: bad input (a UserError) is one line and exit 2; anything else is a
bug, whose exception leaves ``main`` with its traceback (Python's exit status 1)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import pipelines.commands.codec as codec_command
from manifests.errors import UserError
from pipelines.cli import main
from tests.conftest import REPO, cli_env


def _decode_args(tmp_path) -> list[str]:
    return ["codec", "decode", str(tmp_path / "missing.npy"), str(tmp_path / "out.wav")]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STEPFORGE_DEBUG", raising=False)
    assert main(_decode_args(tmp_path)) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepforge codec: error: "), captured.err
    assert "missing.npy" in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out.wav").exists()


def test_stepforge_debug_shows_the_traceback_of_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("STEPFORGE_DEBUG", "1")
    with pytest.raises(UserError, match="missing.npy"):
        main(_decode_args(tmp_path))


def _broken(exc: Exception):
    def command(args):
        raise exc
    return command


@pytest.mark.parametrize("bug", [KeyError("speaker"), ValueError("shapes (3,) and (4,) differ"),
                                 RuntimeError("worker died")])
def test_a_bug_propagates_from_main(tmp_path, capsys, monkeypatch, bug):
    """Not only KeyError: a plain ValueError is a bug too, not bad input."""
    monkeypatch.delenv("STEPFORGE_DEBUG", raising=False)
    monkeypatch.setattr(codec_command, "decode", _broken(bug))  # register() reads it when main builds the parser
    with pytest.raises(type(bug)) as raised:
        main(_decode_args(tmp_path))
    assert raised.value is bug
    assert "error:" not in capsys.readouterr().err


def test_interrupt_is_exit_130(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(codec_command, "decode", _broken(KeyboardInterrupt()))
    assert main(_decode_args(tmp_path)) == 130
    assert "rerun the same command to resume" in capsys.readouterr().err


def test_a_bug_exits_1_with_its_traceback(tmp_path):
    """What a user sees: the interpreter prints the traceback and exits 1 (as the ``stepforge``
    console script, which calls ``sys.exit(main())``)."""
    script = ("import sys\n"
              "import pipelines.commands.codec as c\n"
              "def decode(args):\n"
              "    return {}['speaker']\n"
              "c.decode = decode\n"
              "from pipelines.cli import main\n"
              f"sys.exit(main({_decode_args(tmp_path)!r}))\n")
    env = cli_env()
    env.pop("STEPFORGE_DEBUG", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback (most recent call last)" in proc.stderr and "KeyError: 'speaker'" in proc.stderr
    assert "stepforge codec: error:" not in proc.stderr
