"""A full disk or a read-only output directory (a small tmpfs mounted for the test): one clear
line and exit 2, nothing committed is broken (``verify`` finds only what a rerun regenerates),
and the rerun after space is freed completes."""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from manifests import RunDir
from manifests.errors import StorageError
from pipelines.cli import main as cli_main
from pipelines.verify import verify_run
from tests.conftest import CONFIGS, copy_run, stepforge

MOUNT_SKIP = "mounting a tmpfs needs root with CAP_SYS_ADMIN (these tests fill or freeze a small file system)"


class Tmpfs:
    """A tmpfs mounted at ``path`` for one test (unmounted after it)."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"{MOUNT_SKIP}: {proc.stderr.strip()}")

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)

    def fill(self, leave: int) -> Path:
        """A filler file that leaves ``leave`` bytes free; delete it to free the space."""
        st = os.statvfs(self.path)
        filler = self.path / "filler"
        with open(filler, "wb") as f:
            os.posix_fallocate(f.fileno(), 0, st.f_bavail * st.f_frsize - leave)
        return filler

    def umount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip(MOUNT_SKIP)
    mounted = []

    def mount(name: str = "fs", size: str = "8m") -> Tmpfs:
        fs = Tmpfs(tmp_path / name, size)
        mounted.append(fs)
        return fs

    yield mount
    for fs in mounted:
        fs.umount()


def one_line_error(proc_or_err, command: str) -> str:
    err = proc_or_err if isinstance(proc_or_err, str) else proc_or_err.stderr
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"stepforge {command}: error: "), err
    return lines[0]


def nothing_committed_is_broken(run: RunDir) -> None:
    """verify may only find leftovers a rerun regenerates (a stale manifest.parquet)."""
    broken = [str(f) for f in verify_run(run).findings if not f.repairable]
    assert broken == []


def test_atomic_writes_on_a_full_disk_raise_one_line_and_leave_nothing(tmpfs):
    from manifests.atomic import atomic_path

    fs = tmpfs(size="64k")
    with pytest.raises(StorageError, match=r"big\.bin: no space left on device; free space, then rerun"):
        with atomic_path(fs.path / "big.bin") as tmp:
            tmp.write_bytes(b"x" * 200_000)
    assert list(fs.path.iterdir()) == []  # neither the file nor its temporary


def test_a_shard_whose_fragment_does_not_fit_is_removed(tmpfs):
    """The tar is written, its journal fragment is not: the tar goes too (it was never committed)."""
    fs = tmpfs(size="1m")
    run = RunDir(fs.path / "run")
    run.shards.mkdir(parents=True)
    run.journal.mkdir()
    fs.fill(leave=40_000)
    rows = [{"id": "a" * 16, "attempt": 0, "text": secrets.token_hex(40_000), "status": "ok"}]  # no room
    with pytest.raises(StorageError, match="manifest.d/shard-000000.parquet: no space left on device"):
        run.commit_shard(0, [("a" * 16, {"json": b"{}", "flac": b"f" * 20_000})], rows)
    assert list(run.shards.iterdir()) == [] and list(run.journal.iterdir()) == []


@pytest.mark.slow
def test_synthesize_into_a_full_disk_fails_in_one_line_and_resumes_when_freed(synthesized_run, tmpfs):
    """The last shard of a run is to be redone on a disk with no room for it: exit 2, one line,
    no half shard; the committed shards still verify; after the filler is deleted the same command
    completes the run."""
    fs = tmpfs(size="8m")
    run = RunDir(copy_run(synthesized_run[0], fs.path / "run"))
    last = sorted(run.shards.glob("shard-*.tar"))[-1]
    redo = [r["id"] for r in run.read_manifest().to_pylist() if r["shard"] == f"shards/{last.name}"]
    assert redo
    last.unlink()
    (run.journal / f"{last.stem}.parquet").unlink()
    run.manifest.unlink()
    run.update_stage("synthesize", status="partial")  # as a run interrupted before its last shard
    filler = fs.fill(leave=48_000)
    args = ("synthesize", CONFIGS / "tiny.yaml", "--out", run.path, "--no-progress", "--shard-size", "5")
    proc = stepforge(*args)
    assert proc.returncode == 2, proc.stderr
    line = one_line_error(proc, "synthesize")
    assert "no space left on device" in line and str(run.path) in line
    assert not (run.shards / last.name).exists()  # no half or uncommitted shard left behind
    assert not list(run.shards.glob(".*.tmp")) and not list(run.journal.glob(".*.tmp"))
    nothing_committed_is_broken(run)
    filler.unlink()
    proc = stepforge(*args)
    assert proc.returncode == 0, proc.stderr
    report = verify_run(run)
    assert report.ok, [str(f) for f in report.findings]
    assert report.counts["rows"] == 12
    assert set(redo) <= set(run.read_manifest().column("id").to_pylist())
    assert run.info()["stages"]["synthesize"]["status"] == "done"


@pytest.mark.slow
def test_filter_on_a_full_disk_fails_in_one_line_and_completes_when_freed(filtered_run, tmpfs, capsys):
    """The verdicts are there; consolidating the manifest and updating run.json need room."""
    fs = tmpfs(size="8m")
    run = RunDir(copy_run(filtered_run, fs.path / "run"))
    run.manifest.unlink()
    filler = fs.fill(leave=0)
    code = cli_main(["filter", str(run.path), "--no-progress"])
    line = one_line_error(capsys.readouterr().err, "filter")
    assert code == 2 and "no space left on device" in line
    nothing_committed_is_broken(run)
    filler.unlink()
    assert cli_main(["filter", str(run.path), "--no-progress"]) == 0
    report = verify_run(run)
    assert report.ok, [str(f) for f in report.findings]


def test_a_read_only_output_dir_fails_in_one_line(filtered_run, tmpfs, capsys):
    fs = tmpfs(size="8m")
    run = copy_run(filtered_run, fs.path / "run")
    fs.remount("ro")
    for command, args in (("filter", [run, "--no-progress"]),
                          ("synthesize", [CONFIGS / "tiny.yaml", "--out", run, "--no-progress"]),
                          ("synthesize", [CONFIGS / "tiny.yaml", "--out", fs.path / "new", "--no-progress"]),
                          ("run", [CONFIGS / "pipeline_tiny.yaml", "--out", fs.path / "pipe", "--no-progress"])):
        code = cli_main([command, *map(str, args)])
        line = one_line_error(capsys.readouterr().err, command)
        assert code == 2 and "read-only file system" in line, line
    proc = stepforge("filter", run, "--no-progress")  # the real CLI process, once
    assert proc.returncode == 2 and "read-only file system" in one_line_error(proc, "filter")
    report = verify_run(RunDir(run))
    assert report.ok, [str(f) for f in report.findings]
