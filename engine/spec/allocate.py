"""Turn category shares and quotas into exact per-task instruction cells.

A cell is the tuple ``(emotion, intensity, dialect, style, speed, speaker)`` in the field order of
:class:`~engine.instructions.Instruction` (``speaker`` is "" for tasks that do not clone).

Shares are apportioned per dimension with largest remainders, so each dimension's counts sum to
the total and each value is within one of ``total * share`` (intensity is apportioned among the
tasks whose emotion is not neutral). The per-dimension value lists are shuffled with the seed and
zipped into cells, which makes dimensions independent of each other in expectation.

Some zipped cells are invalid (rap or humming with an emotion, humming with a speed). Rule: such a
cell swaps the offending value (emotion with its intensity, then speed, then style) with another
task picked by the seeded generator, when the swap leaves both valid; swaps keep every dimension's
counts exact. Only when no swap is found (the shares make it impossible, e.g. half the tasks rap
but only a fifth neutral) the value falls back to neutral emotion / normal speed / speech style,
and the counts of that dimension drift from the shares.
"""
from __future__ import annotations

import logging
import math
import random
from functools import lru_cache

from engine.instructions import NEUTRAL, Instruction, InstructionError

log = logging.getLogger(__name__)
Cell = tuple  # (emotion, intensity, dialect, style, speed, speaker)
EMOTION, INTENSITY, DIALECT, STYLE, SPEED, SPEAKER = range(6)
# Swap units, in the order tried: emotion travels with its intensity.
UNITS = ((EMOTION, INTENSITY), (SPEED,), (STYLE,))
FALLBACK = {EMOTION: NEUTRAL, INTENSITY: 0, SPEED: "normal", STYLE: "speech"}
# A cell may break two rules at once (humming + emotion + speed), which no single swap mends: the
# first stage judges cells as if their speed were normal (mending emotion vs style), the second
# judges them fully (mending speed).
STAGES = ((SPEED,), ())
MAX_TRIES = 50  # partners tried per useful value; only impossible shares exhaust it


def largest_remainder(weights: dict, total: int, rng: random.Random) -> dict:
    """Apportion ``total`` over ``weights`` (value -> share >= 0, sum > 0); counts sum to total.

    Each value gets ``floor(total * share)``; the seats left go to the largest fractional parts,
    exact ties broken by ``rng``. Zero shares get zero.
    """
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    order = sorted(exact, key=lambda k: (-(exact[k] - counts[k]), rng.random()))
    for k in order[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def _deal(counts: dict, rng: random.Random) -> list:
    values = [v for v, n in counts.items() for _ in range(n)]
    rng.shuffle(values)
    return values


@lru_cache(maxsize=65536)
def is_valid(cell: Cell) -> bool:
    """True when ``Instruction(*cell)`` accepts the cell."""
    try:
        Instruction(*cell)
    except InstructionError:
        return False
    return True


def allocate_shares(shares: dict[str, dict], total: int, rng: random.Random) -> list[Cell]:
    """Cells for ``total`` tasks from ``shares`` (dimension -> {value: weight}; all six given).

    Returns cells in a seeded random order; see the module docstring for the invalid-cell rule.
    """
    if total <= 0:
        return []
    columns = {d: _deal(largest_remainder(shares[d], total, rng), rng)
               for d in ("emotion", "dialect", "style", "speed", "speaker")}
    emotional = sum(e != NEUTRAL for e in columns["emotion"])
    levels = iter(_deal(largest_remainder(shares["intensity"], emotional, rng), rng)) if emotional else iter(())
    cells = []
    for i in range(total):
        emotion = columns["emotion"][i]
        cells.append([emotion, 0 if emotion == NEUTRAL else next(levels), columns["dialect"][i],
                      columns["style"][i], columns["speed"][i], columns["speaker"][i]])
    fallbacks = repair(cells, rng)
    if fallbacks:
        log.warning("%d of %d tasks fell back to neutral emotion / normal speed / speech: the shares "
                    "ask for more rap or humming than valid partners allow", fallbacks, total)
    return [tuple(c) for c in cells]


def repair(cells: list[list], rng: random.Random) -> int:
    """Make every cell valid in place (swaps first, fallbacks last); returns the fallback count."""
    buckets = {unit: _buckets(cells, unit) for unit in UNITS}
    fallbacks = 0
    for relax in STAGES:
        def ok(cell, relax=relax) -> bool:
            return is_valid(tuple(_with(cell, relax, tuple(FALLBACK[k] for k in relax))))

        hopeless: set[Cell] = set()  # cells no swap could fix: an identical one will not fare better
        for i in range(len(cells)):
            cell = tuple(cells[i])
            if ok(cell) or (cell not in hopeless and _swap(cells, i, buckets, rng, ok)):
                continue
            hopeless.add(cell)
            if not relax:
                fallbacks += 1
                _fall_back(cells, i)
    return fallbacks


def _fall_back(cells: list[list], i: int) -> None:
    for unit in UNITS:
        cells[i] = _with(cells[i], unit, tuple(FALLBACK[k] for k in unit))
        if is_valid(tuple(cells[i])):
            return


def _get(cell, unit: tuple) -> tuple:
    return tuple(cell[k] for k in unit)


def _with(cell, unit: tuple, value: tuple) -> list:
    out = list(cell)
    for k, v in zip(unit, value):
        out[k] = v
    return out


def _buckets(cells: list[list], unit: tuple) -> dict[tuple, list[int]]:
    """Value of ``unit`` -> indices of the cells holding it (entries may go stale after swaps)."""
    out: dict[tuple, list[int]] = {}
    for i, cell in enumerate(cells):
        out.setdefault(_get(cell, unit), []).append(i)
    return out


def _swap(cells: list[list], i: int, buckets: dict, rng: random.Random, ok) -> bool:
    """Swap one unit of cell ``i`` with a partner so that ``ok`` holds for both."""
    for unit in UNITS:
        mine, index = _get(cells[i], unit), buckets[unit]
        useful = [v for v in index if v != mine and ok(_with(cells[i], unit, v))]
        # Weighted random order (by bucket size), so a partner is close to a uniform pick among
        # all tasks holding a useful value.
        useful.sort(key=lambda v: -(rng.random() ** (1.0 / len(index[v]))))
        for value in useful:
            bucket = index[value]
            for _ in range(MAX_TRIES):
                j = bucket[rng.randrange(len(bucket))]
                partner = _with(cells[j], unit, mine)
                if _get(cells[j], unit) == value and ok(partner):
                    cells[i], cells[j] = _with(cells[i], unit, value), partner
                    index.setdefault(mine, []).append(j)
                    bucket.append(i)
                    return True
    return False
