"""Give each allocated cell a text of its language and turn it into a :class:`~engine.task.Task`."""
from __future__ import annotations

import hashlib
import random

from engine.instructions import DIALECTS, Instruction
from engine.spec.allocate import DIALECT, SPEAKER, Cell
from engine.task import Task, task_id


def task_seed(spec_seed: int, tid: str) -> int:
    """Per-task seed in [0, 2**31): from the spec seed and the task id, so it follows the task."""
    return int(hashlib.sha256(f"{spec_seed}:{tid}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def assign_texts(cells: list[Cell], texts: dict[str, list[str]], speakers: list, seed: int,
                 exclude: frozenset = frozenset()) -> list[Task]:
    """One text per cell from the cell's language, dealt round-robin from a seeded shuffle so texts
    are used evenly; a text already used with the same cell, or whose task id is in ``exclude``
    (tasks a run already has), is skipped for the next one."""
    pools = {}
    for lang, pool in texts.items():
        pool = list(pool)
        random.Random(f"stepforge:{seed}:texts:{lang}").shuffle(pool)
        pools[lang] = pool
    cursor = dict.fromkeys(pools, 0)
    prompts = {s.name: (s, s.wav_sha256()) for s in speakers}
    used: dict[Cell, set] = {}
    tasks = []
    for cell in cells:
        lang = DIALECTS[cell[DIALECT]][1]
        pool, taken = pools[lang], used.setdefault(cell, set())
        if len(taken) == len(pool):
            continue  # every text of this language is already used with this exact cell
        for k in range(cursor[lang], cursor[lang] + len(pool)):
            text = pool[k % len(pool)]
            if text in taken:
                continue
            taken.add(text)  # used or excluded: either way not a candidate for this cell again
            task = _task(text, lang, cell, prompts.get(cell[SPEAKER]), seed)
            if task.id not in exclude:
                cursor[lang] = (k + 1) % len(pool)
                tasks.append(task)
                break
    return tasks


def _task(text: str, lang: str, cell: Cell, prompt, seed: int) -> Task:
    instruction = Instruction(*cell)
    speaker, wav_hash = prompt or (None, "")
    tid = task_id(text, instruction, lang, wav_hash)
    return Task(
        id=tid, text=text, lang=lang, emotion=instruction.emotion, intensity=instruction.intensity,
        dialect=instruction.dialect, style=instruction.style, speed=instruction.speed,
        speaker=instruction.speaker, speaker_wav=speaker.ref if speaker else "",
        speaker_text=speaker.text if speaker else "", seed=task_seed(seed, tid),
    )
