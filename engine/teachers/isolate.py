"""Run eSpeak work in a forked child so that every rendering starts from the same state.

eSpeak NG output depends on what it rendered before: its wave generator keeps a pitch-flutter
phase and an automatic gain level across utterances, which the API cannot reset (its noise
generator is reseeded on every render, see :mod:`engine.espeak`). So the same text and settings
give slightly different audio (and lengths) on each call. Forking from a process that has
initialised eSpeak but never synthesised gives each rendering the same starting state: a task
and its seed always give identical audio, in any process.

    >>> wav, sr = pristine(render, "Hello.", "en-us")   # ~20 ms fork overhead per call

Only eSpeak calls and light numpy belong in the child; the result comes back pickled. Set
``STEPFORGE_ESPEAK_FORK=0`` (or run where ``os.fork`` is missing) to render in-process instead,
giving up bit-exact repeatability.
"""
from __future__ import annotations

import os
import pickle

from engine.espeak import synthesizer


def fork_enabled() -> bool:
    return hasattr(os, "fork") and os.environ.get("STEPFORGE_ESPEAK_FORK", "1") != "0"


def pristine(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` evaluated in a child forked from this process's eSpeak state.

    Exceptions raised in the child are re-raised here. The parent must not synthesise with
    eSpeak itself, or its state (and so every later result) drifts.
    """
    if not fork_enabled():
        return fn(*args, **kwargs)
    synth = synthesizer()  # initialise before forking so children need not
    read_fd, write_fd = os.pipe()
    with synth.lock:  # no thread is inside eSpeak while the child is made
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_fd)
        try:
            payload = pickle.dumps((True, fn(*args, **kwargs)))
        except BaseException as exc:  # the parent re-raises it
            try:
                payload = pickle.dumps((False, exc))
            except Exception:
                payload = pickle.dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        with os.fdopen(write_fd, "wb") as out:
            out.write(payload)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as inp:
        payload = inp.read()
    _, status = os.waitpid(pid, 0)
    if not payload:
        raise RuntimeError(f"eSpeak child process died (wait status {status})")
    ok, value = pickle.loads(payload)
    if not ok:
        raise value
    return value
