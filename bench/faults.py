"""Fault-injection matrix (issue 19 item 2): kill -9 each stage at a random moment, rerun the same
command, and check what the rerun left behind.

    python -m bench.faults                                  # every stage, default trials
    python -m bench.faults --stages synthesize,serve --trials 5 --seed 1 --work /tmp/faults

Each stage first runs once uncut (the baseline): its wall time is the window the kill moments are
drawn from (uniformly, by a ``random.Random`` seeded with ``--seed`` and the stage name, so a
stage's delays do not depend on which other stages run). A trial starts the stage's command in a
session of its own, sends SIGKILL to the whole process group at the drawn moment, reports any
process of the group that outlived the kill (then kills it), reruns the same command to the end
and checks the outcome:

- synthesize, filter, eval: the rerun exits 0, ``stepforge verify`` passes, every task is in the
  journal, the consolidated manifest (and, after filter, the verdicts) exactly once;
- distill: the same, ``verify RUN --student STUDENT`` passes, the rerun resumed from the checkpoint
  that was committed when the kill landed, the logged steps are 1..N with no gap or repeat, and the
  loss at each step equals the uncut baseline's (same data order and optimizer state);
- run (the pipeline runner on pipelines/configs/pipeline_tiny.yaml): every stage done in the
  ledger, the run and its student verify, the student's steps continuous, eval rows once;
- serve: a client registers voices and asks for speech while the kill lands; the restarted
  server answers /health, lists its voices and speaks (with the default voice and with a
  voice registered before the kill, when one is listed).

Distill's and serve's moments are drawn from their working window rather than from process
start: distill's from its first logged step to its exit (under load its start, the DeepSpeed
launcher, imports and corpus loading, is most of its time, and a kill there tests nothing a
synthesize kill does not), serve's from its first healthy /health over the time the uncut server
took to answer 3 client rounds (each registers a voice and speaks with it).

Prints the matrix (stage x trials x outcomes) and writes it to ``--out`` as .json and .md. Not
part of ``make test``; tests/pipelines/test_faults_small.py runs two cheap trials through
:func:`run_trials`.
"""
from __future__ import annotations

import abc
import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "pipelines" / "configs"
SPEAKERS = REPO / "engine" / "data" / "speakers"
STAGES = ("synthesize", "filter", "distill", "eval", "run", "serve")
# Distill / the pipeline runner take minutes a trial on 2 shared cores (measured: bench/faults_results.md).
DEFAULT_TRIALS = {"synthesize": 20, "filter": 20, "distill": 3, "eval": 10, "run": 2, "serve": 20}
DISTILL_ARGS = ["--config", str(CONFIGS / "distill_tiny.yaml"), "--set", "student.overrides={num_hidden_layers: 2}",
                "--set", "data.max_tokens=2048", "--set", "data.heldout=2", "--set", "train.log_every=1",
                "--set", "train.save_every=2", "--set", "train.eval_every=4", "--set", "train.warmup_steps=2",
                "--no-eval"]
DISTILL_STEPS = 8
ROUNDS = 3  # serve: client rounds (register a voice, speak with it) the kill window spans
TIMEOUT_S = 3600


@dataclass
class Trial:
    """One kill and rerun: ``outcome`` is ``ok`` or ``failed``; ``reasons`` say why it failed."""

    stage: str
    index: int
    delay_s: float
    killed: bool = False          # False: the command ended before the drawn moment
    outcome: str = "ok"
    reasons: list[str] = field(default_factory=list)
    note: str = ""
    rerun_s: float = 0.0


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", *map(str, args)]


def env() -> dict:
    out = dict(os.environ)
    out["PYTHONPATH"] = str(REPO) + os.pathsep + out.get("PYTHONPATH", "")
    out.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    return out


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """``cmd`` in a session of its own (its process group is the one the kill hits)."""
    with open(log, "ab") as f:
        return subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> list[str]:
    """SIGKILL ``proc``'s process group; returns 'PID COMMAND' of its descendants still alive 60 s
    later (those are then killed by pid)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(family, timeout=60)
    leaked = []
    for p in alive:
        with contextlib.suppress(psutil.Error):
            leaked.append(f"{p.pid} {' '.join(p.cmdline())[:100]}")
            p.kill()
    return leaked


def verify(run: Path, *students: Path) -> list[str]:
    """``stepforge verify RUN [--student S]`` through the CLI entry; its findings, [] when it exits 0."""
    from pipelines.cli import main

    out = io.StringIO()
    args = ["verify", str(run), *[a for s in students for a in ("--student", str(s))]]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(args)
    if code == 0:
        return []
    lines = [x.strip() for x in out.getvalue().splitlines() if x.strip()]
    return [f"verify {run.name} exit {code}: " + "; ".join(lines[1:6] or lines[:5])]


def once_each(run: Path, verdicts: bool = False) -> list[str]:
    """Every task of ``run`` exactly once in the journal and the consolidated manifest (and the
    filter verdicts when ``verdicts``)."""
    import pyarrow.parquet as pq

    from manifests import RunDir

    rd = RunDir(run)
    tasks = set(pq.read_table(run / "tasks.parquet", columns=["id"]).column("id").to_pylist())
    tables = {"journal": rd.journal_table(), "manifest.parquet": rd.read_manifest()}
    if verdicts:
        tables["verdicts"] = rd.verdict_table()
    reasons = []
    for name, table in tables.items():
        counts = Counter(table.column("id").to_pylist())
        twice = sorted(i for i, n in counts.items() if n > 1)
        missing, extra = sorted(tasks - set(counts)), sorted(set(counts) - tasks)
        for what, ids in (("twice", twice), ("missing", missing), ("not a task", extra)):
            if ids:
                reasons.append(f"{name}: {len(ids)} id(s) {what} ({', '.join(ids[:3])})")
    return reasons


def steps_continuous(student: Path, steps: list[int], reference: dict | None = None) -> list[str]:
    """The student's logged training steps are ``steps`` (an uncut run's), each once; with
    ``reference`` (step -> loss of an uncut run), each loss equals it."""
    path = student / "logs" / "metrics.jsonl"
    if not path.is_file():
        return [f"{path.relative_to(student.parent)} missing"]
    logged = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    seen = [m["step"] for m in logged if "loss" in m]
    if seen != steps:
        return [f"logged steps {seen} are not {steps}"]
    if reference:
        off = [s for m in logged if "loss" in m
               for s in [m["step"]] if abs(m["loss"] - reference[s]) > 1e-4 * abs(reference[s]) + 1e-5]
        if off:
            return [f"loss differs from the uncut run at steps {off}"]
    return []


def curve(student: Path) -> dict[int, float]:
    lines = (student / "logs" / "metrics.jsonl").read_text().splitlines()
    return {m["step"]: m["loss"] for m in map(json.loads, lines) if "loss" in m}


class Case(abc.ABC):
    """One stage under test. Subclasses set ``name`` and build ``command``; ``fresh`` prepares a
    trial's folder, ``check`` returns the reasons a finished rerun is wrong."""

    name = ""
    window_s: float | None = None   # the uncut run's wall time (from ``anchor`` when there is one)

    def fresh(self, folder: Path) -> None:
        """Prepare ``folder`` (empty) for one run of :meth:`command`."""

    @abc.abstractmethod
    def command(self, folder: Path) -> list[str]:
        """The stage's command line; the same for the killed run and the rerun."""

    def anchor(self, folder: Path) -> bool:
        """True once the moment the kill delay counts from has come (default: the start)."""
        return True

    def at_kill(self, folder: Path) -> dict:
        """State worth remembering from the moment of the kill (passed to :meth:`check`)."""
        return {}

    def check(self, folder: Path, rerun: subprocess.CompletedProcess, state: dict) -> list[str]:
        """Why the finished rerun in ``folder`` is wrong ([] when it is right)."""
        return []

    def measure(self, folder: Path) -> float:
        """Run the command uncut in ``folder``; sets and returns :attr:`window_s`."""
        self.fresh(folder)
        proc = start(self.command(folder), folder / "baseline.log")
        t0 = time.monotonic()
        while not self.anchor(folder) and proc.poll() is None:
            time.sleep(0.05)
        t1 = time.monotonic()
        if proc.wait(timeout=TIMEOUT_S) != 0:
            raise RuntimeError(f"{self.name} baseline failed: see {folder / 'baseline.log'}")
        self.window_s = time.monotonic() - t1
        self.baseline(folder)
        print(f"faults: {self.name} baseline {time.monotonic() - t0:.1f} s (kill window {self.window_s:.1f} s)",
              flush=True)
        return self.window_s

    def baseline(self, folder: Path) -> None:
        """Keep what the checks compare with from the uncut run in ``folder``."""

    def trial(self, folder: Path, index: int, delay: float) -> Trial:
        trial = Trial(self.name, index, round(delay, 2))
        self.fresh(folder)
        log = folder / "trial.log"
        proc = start(self.command(folder), log)
        while not self.anchor(folder) and proc.poll() is None:
            time.sleep(0.05)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            state = self.at_kill(folder)
            leaked = kill_group(proc)
            trial.killed = True
            if leaked:
                trial.reasons.append(f"outlived the kill: {', '.join(leaked[:4])}")
        else:
            state = {}
            if proc.returncode != 0:
                trial.reasons.append(f"first run exit {proc.returncode} before the kill")
        t0 = time.monotonic()
        rerun = subprocess.run(self.command(folder), cwd=REPO, env=env(), capture_output=True, text=True,
                               timeout=TIMEOUT_S)
        trial.rerun_s = round(time.monotonic() - t0, 1)
        with open(log, "a") as f:
            f.write(f"\n--- rerun (exit {rerun.returncode}) ---\n{rerun.stdout}\n{rerun.stderr}")
        if rerun.returncode != 0:
            tail = (rerun.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            trial.reasons.append(f"rerun exit {rerun.returncode}: {tail[:200]}")
        else:
            try:
                trial.reasons += self.check(folder, rerun, state)
            except Exception as exc:  # a check that cannot read what the rerun left is a finding too
                trial.reasons.append(f"check raised {type(exc).__name__}: {exc}")
            trial.note = state.get("note", "")
        trial.outcome = "failed" if trial.reasons else "ok"
        return trial


class Synthesize(Case):
    name = "synthesize"

    def __init__(self, spec: Path = CONFIGS / "tiny.yaml", shard_size: int = 2):
        self.spec, self.shard_size = Path(spec), shard_size

    def command(self, folder):
        return cli("synthesize", self.spec, "--out", folder / "run", "--no-progress", "--workers", 1,
                   "--shard-size", self.shard_size, "--batch-size", 1)

    def at_kill(self, folder):
        n = len(list((folder / "run" / "manifest.d").glob("*.parquet")))
        return {"note": f"{n} shard(s) committed at the kill"}

    def check(self, folder, rerun, state):
        return verify(folder / "run") + once_each(folder / "run")


class Filter(Case):
    name = "filter"

    def __init__(self, source: Path):
        self.source = Path(source)  # a synthesized run, copied for each trial

    def fresh(self, folder):
        shutil.copytree(self.source, folder / "run", ignore=shutil.ignore_patterns(".lock", "filter.d", "student"))
        info = json.loads((folder / "run" / "run.json").read_text())
        if "filter" in info.get("stages", {}):
            raise ValueError(f"{self.source} is filtered already; Filter needs a synthesized run")

    def command(self, folder):
        # One filter actor: each holds Whisper, resemblyzer and DNSMOS, and two of them beside a
        # shared machine's other jobs had Ray's memory monitor kill them over and over.
        return cli("filter", folder / "run", "--no-progress", "--workers", 1)

    def at_kill(self, folder):
        n = len(list((folder / "run" / "filter.d").glob("*.parquet")))
        return {"note": f"{n} verdict part(s) committed at the kill"}

    def check(self, folder, rerun, state):
        return verify(folder / "run") + once_each(folder / "run", verdicts=True)


class Distill(Case):
    name = "distill"

    def __init__(self, corpus: Path, steps: int = DISTILL_STEPS):
        self.corpus, self.steps, self.reference = Path(corpus), steps, None

    def command(self, folder):
        return cli("distill", self.corpus, "--out", folder / "student", "--steps", self.steps, *DISTILL_ARGS)

    def anchor(self, folder):
        return (folder / "student" / "logs" / "metrics.jsonl").is_file()

    def baseline(self, folder):
        self.reference = curve(folder / "student")

    def at_kill(self, folder):
        latest = folder / "student" / "checkpoints" / "latest"
        name = latest.read_text().strip() if latest.is_file() else None
        info = folder / "student" / "train.json"
        done = info.is_file() and json.loads(info.read_text()).get("status") == "done"
        return {"latest": name, "done": done,
                "note": "trained and exported at the kill" if done else f"latest checkpoint at the kill: {name}"}

    def check(self, folder, rerun, state):
        student = folder / "student"
        reasons = verify(self.corpus, student) + steps_continuous(student, list(range(1, self.steps + 1)),
                                                                  self.reference)
        if state.get("done"):  # killed during its last words: the rerun must not train again
            if "nothing to train" not in rerun.stdout:
                reasons.append("trained again although train.json said done at the kill")
        # A checkpoint written as the kill landed may have become `latest` after at_kill looked.
        elif state.get("latest") and "resumed from step-" not in rerun.stdout:
            reasons.append(f"did not resume ({state['latest']} was committed at the kill)")
        elif state.get("latest"):
            got = rerun.stdout.split("resumed from ")[1].split()[0].rstrip(":")
            if got < state["latest"]:
                reasons.append(f"resumed from {got}, older than {state['latest']} committed at the kill")
            state["note"] = f"resumed from {got}"
        return reasons


class Eval(Case):
    name = "eval"

    def __init__(self, student: Path, prompts: Path, max_seconds: float = 1.5):
        self.student, self.prompts, self.max_seconds = Path(student), Path(prompts), max_seconds

    def command(self, folder):
        return cli("eval", self.student, "--prompts", self.prompts, "--out", folder / "eval", "--engine", "torch",
                   "--max-seconds", self.max_seconds, "--no-progress")

    def check(self, folder, rerun, state):
        ids = [json.loads(x)["id"] for x in self.prompts.read_text().splitlines() if x.strip()]
        rows = json.loads((folder / "eval" / "eval.json").read_text())["rows"]
        reasons = verify(folder / "eval") + once_each(folder / "eval", verdicts=True)
        if sorted(r["id"] for r in rows) != sorted(ids):
            reasons.append(f"eval.json rows {sorted(r['id'] for r in rows)} != the prompts {sorted(ids)}")
        return reasons


class Pipeline(Case):
    name = "run"

    def __init__(self, pipeline: Path = CONFIGS / "pipeline_tiny.yaml"):
        import yaml

        self.pipeline = Path(pipeline)
        train = yaml.safe_load(self.pipeline.read_text())["distill"]["train"]
        # Logged every log_every steps and at the last (an uncut run's list, once it has run).
        self.logged = sorted({*range(train["log_every"], train["steps"] + 1, train["log_every"]), train["steps"]})

    def baseline(self, folder):
        self.logged = sorted(curve(folder / "run" / "student"))

    def command(self, folder):
        return cli("run", self.pipeline, "--out", folder / "run", "--no-progress")

    def at_kill(self, folder):
        try:
            stages = json.loads((folder / "run" / "run.json").read_text())["pipeline"]["stages"]
        except (OSError, ValueError, KeyError):
            stages = {}
        done = [n for n, s in stages.items() if s.get("status") == "done"]
        return {"note": f"done at the kill: {', '.join(done) or 'nothing'}"}

    def check(self, folder, rerun, state):
        run = folder / "run"
        stages = json.loads((run / "run.json").read_text())["pipeline"]["stages"]
        reasons = [f"ledger: {n} is {s.get('status')}" for n, s in stages.items() if s.get("status") != "done"]
        reasons += verify(run, run / "student") + once_each(run, verdicts=True)
        reasons += steps_continuous(run / "student", self.logged)
        if (run / "eval").is_dir():
            reasons += verify(run / "eval")
        if not (run / "report.html").is_file():
            reasons.append("no report.html")
        return reasons


class Serve(Case):
    name = "serve"

    def __init__(self, student: Path, max_seconds: float = 1.0):
        self.student, self.max_seconds = Path(student), max_seconds
        self.port = None

    def fresh(self, folder):
        self.port = free_port()

    def command(self, folder):
        return cli("serve", self.student, "--port", self.port, "--engine", "torch", "--max-seconds",
                   self.max_seconds, "--voices", folder / "voices")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def measure(self, folder):
        self.fresh(folder)
        proc = start(self.command(folder), folder / "baseline.log")
        t0 = time.monotonic()
        try:
            if not wait_healthy(self.url, proc):
                raise RuntimeError(f"serve baseline did not start: see {folder / 'baseline.log'}")
            t1 = time.monotonic()
            for i in range(ROUNDS):
                if not client_round(self.url, f"base{i}"):
                    raise RuntimeError(f"serve baseline: a client round failed: see {folder / 'baseline.log'}")
            self.window_s = time.monotonic() - t1
        finally:
            stop(proc)
        print(f"faults: serve baseline: healthy after {t1 - t0:.1f} s, {ROUNDS} client rounds in "
              f"{self.window_s:.1f} s (the kill window)", flush=True)
        return self.window_s

    def trial(self, folder, index, delay):
        import httpx

        trial = Trial(self.name, index, round(delay, 2))
        self.fresh(folder)
        log = folder / "trial.log"
        proc = start(self.command(folder), log)
        if not wait_healthy(self.url, proc):
            stop(proc)
            trial.outcome, trial.reasons = "failed", [f"did not start before the kill (exit {proc.poll()})"]
            return trial
        done, rounds = threading.Event(), []
        client = threading.Thread(target=client_loop, args=(self.url, done, rounds), daemon=True)
        client.start()
        time.sleep(delay)
        trial.killed = proc.poll() is None
        leaked = kill_group(proc)
        done.set()
        client.join(timeout=150)
        if leaked:
            trial.reasons.append(f"outlived the kill: {', '.join(leaked[:4])}")
        registered = [f"v{i}" for i, ok in enumerate(rounds) if ok]
        trial.note = f"{len(rounds)} client round(s) begun before the kill"
        t0 = time.monotonic()
        proc = start(self.command(folder), log)
        try:
            if not wait_healthy(self.url, proc):
                trial.reasons.append(f"restart did not answer /health (exit {proc.poll()})")
            else:
                trial.rerun_s = round(time.monotonic() - t0, 1)
                listed = httpx.get(f"{self.url}/v1/audio/voices", timeout=60)
                names = [v["id"] for v in listed.json()["data"]] if listed.status_code == 200 else []
                if listed.status_code != 200:
                    trial.reasons.append(f"GET voices: {listed.status_code}")
                lost = [n for n in registered if n not in names]
                if lost:
                    trial.reasons.append(f"registered voice(s) {lost} lost")
                mine = sorted(n for n in names if n.startswith("v") and n[1:].isdigit())
                for voice in ["default"] + mine[-1:]:
                    trial.reasons += speak(self.url, voice)
        except Exception as exc:  # e.g. a voices list that is not JSON: a finding, not a crash
            trial.reasons.append(f"check raised {type(exc).__name__}: {exc}")
        finally:
            stop(proc)
        trial.outcome = "failed" if trial.reasons else "ok"
        return trial


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, deadline_s: float = 600) -> bool:
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return True
        time.sleep(0.2)
    return False


def stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        kill_group(proc)


def speak(url: str, voice: str) -> list[str]:
    """A speech request with ``voice``; [] when it is answered with a decodable WAV."""
    import httpx
    import soundfile as sf

    body = {"model": "student", "input": "Hello there.", "voice": voice, "response_format": "wav", "seed": 1}
    try:
        r = httpx.post(f"{url}/v1/audio/speech", json=body, timeout=300)
    except httpx.HTTPError as exc:
        return [f"speech ({voice}): {type(exc).__name__}"]
    if r.status_code != 200:
        return [f"speech ({voice}): {r.status_code} {r.text[:120]}"]
    wav, rate = sf.read(io.BytesIO(r.content))
    return [] if rate == 16000 and len(wav) else [f"speech ({voice}): empty audio"]


def client_round(url: str, name: str) -> bool:
    """Register voice ``name`` from a built-in prompt, then speak with it; True when both answered."""
    import httpx

    files = {"audio": ("amy.wav", (SPEAKERS / "amy.wav").read_bytes(), "audio/wav")}
    data = {"name": name, "transcript": (SPEAKERS / "amy.txt").read_text().strip()}
    made = httpx.post(f"{url}/v1/audio/voices", files=files, data=data, timeout=300)
    return made.status_code == 201 and not speak(url, name)


def client_loop(url: str, done: threading.Event, rounds: list) -> None:
    """Rounds of :func:`client_round` (voices v0, v1, ...) until ``done``; ``rounds[i]``: whether
    round i was answered (a round cut by the kill counts as not)."""
    import httpx

    while not done.is_set():
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code != 200:
                raise httpx.HTTPError("not ready")
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        try:
            rounds.append(client_round(url, f"v{len(rounds)}"))
        except httpx.HTTPError:
            rounds.append(False)


def run_trials(case: Case, trials: int, rng: random.Random, work: Path, out: list | None = None) -> list[Trial]:
    """``trials`` kills of ``case`` at moments drawn from ``rng`` within ``case.window_s`` (set it,
    or call ``case.measure``), each in a fresh folder under ``work``; appended to ``out`` (a list
    the caller may read as they come) and returned."""
    out = [] if out is None else out
    for _ in range(trials):
        i, delay = len(out), rng.uniform(0, case.window_s)
        folder = work / f"{case.name}-{i:02d}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        trial = case.trial(folder, i, delay)
        print(f"faults: {case.name} #{i} kill at {trial.delay_s:.1f} s"
              f"{'' if trial.killed else ' (ended before it)'}: {trial.outcome}"
              f"{' - ' + '; '.join(trial.reasons) if trial.reasons else ''}"
              f"{' [' + trial.note + ']' if trial.note else ''}", flush=True)
        out.append(trial)
    return out


def tiny_student(path: Path) -> Path:
    from engine.models import build_student, export

    return export(build_student("step1", "tiny", seed=0, num_hidden_layers=2), path)


def write_prompts(run: Path, path: Path, n: int = 3) -> Path:
    from manifests import RunDir
    from pipelines.eval_prompts import prompt_record

    rows = sorted(RunDir(run).read_manifest().to_pylist(), key=lambda r: r["id"])[:n]
    path.write_text("".join(json.dumps(prompt_record(r, run), ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


class Inputs:
    """Each stage's case with its inputs, built once under ``work`` on first use: the synthesize
    and filter baselines double as filter's and distill/eval's inputs."""

    def __init__(self, work: Path, filtered: Path | None = None):
        self.work, self.cases, self.student = work, {}, None
        self.filtered = filtered or work / "base-filter" / "run"

    def case(self, stage: str) -> Case:
        if stage not in self.cases:
            case = self._make(stage)
            case.measure(fresh_dir(self.work / f"base-{stage}"))
            self.cases[stage] = case
        return self.cases[stage]

    def _make(self, stage: str) -> Case:
        if stage == "synthesize":
            return Synthesize()
        if stage == "filter":
            self.case("synthesize")
            return Filter(self.work / "base-synthesize" / "run")
        if stage in ("distill", "eval") and not self.filtered.is_dir():
            self.case("filter")
        filtered = self.filtered
        if stage == "distill":
            return Distill(filtered)
        if stage == "eval":
            return Eval(self._student(), write_prompts(filtered, self.work / "prompts.jsonl"))
        if stage == "serve":
            return Serve(self._student())
        return Pipeline()

    def _student(self) -> Path:
        if self.student is None:
            self.student = tiny_student(fresh_dir(self.work / "student") / "student")
        return self.student


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def matrix_markdown(results: dict) -> str:
    lines = ["| stage | window s | trials | killed | ok | failed | failure reasons |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for stage, r in results["stages"].items():
        trials = r["trials"]
        reasons = Counter(x for t in trials for x in t["reasons"])
        text = r.get("error") or "; ".join(f"{n}x {x}" for x, n in reasons.most_common()) or "-"
        windows = r["window_s"] if isinstance(r["window_s"], list) else [r["window_s"]]  # merged runs
        window = "/".join("-" if w is None else f"{w:.1f}" for w in windows)
        lines.append(f"| {stage} | {window} | {len(trials)} | {sum(t['killed'] for t in trials)} "
                     f"| {sum(t['outcome'] == 'ok' for t in trials)} | {sum(t['outcome'] == 'failed' for t in trials)} "
                     f"| {text} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {', '.join(STAGES)}")
    ap.add_argument("--trials", default=None, help="trials per stage: N, or STAGE=N,... (default: "
                    + ", ".join(f"{k}={v}" for k, v in DEFAULT_TRIALS.items()) + ")")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="/tmp/stepforge-faults", help="scratch folder (emptied per trial)")
    ap.add_argument("--filtered", default=None, metavar="RUN",
                    help="a filtered run distill and eval read (default: the filter baseline's)")
    ap.add_argument("--merge", nargs="+", metavar="JSON", help="only merge these results files into OUT")
    ap.add_argument("--out", default=str(REPO / "bench" / "faults_results"), help="writes OUT.json and OUT.md")
    args = ap.parse_args(argv)
    if args.merge:
        return write_results(merge([json.loads(Path(p).read_text()) for p in args.merge]), Path(args.out))
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if bad := [s for s in stages if s not in STAGES]:
        ap.error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    try:
        counts = trial_counts(args.trials, stages)
    except ValueError as exc:
        ap.error(str(exc))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    started, load = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()
    inputs = Inputs(work, args.filtered and Path(args.filtered).resolve())
    results = {"seed": args.seed, "started": started, "cpus": os.cpu_count(), "stages": {},
               "command": "python -m bench.faults " + " ".join(argv if argv is not None else sys.argv[1:])}
    for stage in stages:
        try:
            case = inputs.case(stage)
        except Exception as exc:  # a stage that cannot even run uncut is reported, the rest still run
            print(f"faults: {stage}: no baseline: {exc}", flush=True)
            results["stages"][stage] = {"window_s": None, "error": f"no baseline: {exc}", "trials": []}
            continue
        rng, done = random.Random(f"{args.seed}:{stage}"), []
        for _ in range(counts[stage]):  # one at a time: the files hold every finished trial
            run_trials(case, 1, rng, work, done)
            results["stages"][stage] = {"window_s": case.window_s, "trials": [asdict(t) for t in done]}
            results["load_avg"] = {"start": [round(x, 1) for x in load], "end": [round(x, 1) for x in os.getloadavg()]}
            write_results(results, Path(args.out), quiet=True)
    results["load_avg"] = {"start": [round(x, 1) for x in load], "end": [round(x, 1) for x in os.getloadavg()]}
    return write_results(results, Path(args.out))


def trial_counts(spec: str | None, stages: list[str]) -> dict[str, int]:
    """``--trials``: None (the defaults), ``N`` (every stage) or ``STAGE=N,...`` (the rest: defaults)."""
    if spec is None:
        return {s: DEFAULT_TRIALS[s] for s in stages}
    if spec.isdigit():
        return {s: int(spec) for s in stages}
    counts = dict(DEFAULT_TRIALS)
    for item in spec.split(","):
        name, _, n = item.partition("=")
        if name.strip() not in STAGES or not n.strip().isdigit():
            raise ValueError(f"--trials: {item!r} is not STAGE=N with STAGE one of {', '.join(STAGES)}")
        counts[name.strip()] = int(n)
    return {s: counts[s] for s in stages}


def merge(parts: list[dict]) -> dict:
    """Several results files (stages run as separate processes) as one."""
    out = {"seed": sorted({p["seed"] for p in parts}), "started": min(p["started"] for p in parts),
           "cpus": parts[0]["cpus"], "stages": {}, "command": " ; ".join(p["command"] for p in parts),
           "load_avg": {"start": max((p["load_avg"]["start"] for p in parts), key=lambda x: x[0]),
                        "end": max((p["load_avg"]["end"] for p in parts), key=lambda x: x[0])}}
    for stage in STAGES:
        for p in parts:
            if stage in p["stages"]:
                out["stages"][stage] = p["stages"][stage]
    return out


def write_results(results: dict, out: Path, quiet: bool = False) -> int:
    """Print the matrix (unless ``quiet``), write OUT.json and OUT.md; 1 when a trial failed or a
    stage had no baseline."""
    table = matrix_markdown(results)
    if not quiet:
        print(table)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    load = results["load_avg"]
    out.with_suffix(".md").write_text(
        f"# Fault-injection matrix\n\n`{results['command']}`\n\nSeed {results['seed']}, started "
        f"{results['started']}, {results['cpus']} CPUs (shared), 1-min load average {load['start'][0]} at the start, "
        f"{load['end'][0]} at the end.\n\n{table}\n\nPer trial (kill moment, what was committed at the kill, "
        f"rerun time, reasons): {out.with_suffix('.json').name}.\n")
    trials = [t for r in results["stages"].values() for t in r["trials"]]
    failed = sum(t["outcome"] == "failed" for t in trials)
    broken = [s for s, r in results["stages"].items() if r.get("error")]
    if not quiet:
        print(f"faults: {failed} failed trial(s) of {len(trials)}" + (f"; no baseline: {', '.join(broken)}" if broken else ""))
    return 1 if failed or broken else 0


if __name__ == "__main__":
    sys.exit(main())
