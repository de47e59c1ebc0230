"""tasks.parquet: the expanded tasks as one Arrow table, written atomically.

    >>> write_tasks(spec.expand(), "RUN/tasks.parquet")       # doctest: +SKIP
    >>> read_tasks("RUN/tasks.parquet")[0].instruction.tags()  # doctest: +SKIP
    '(高兴3)(粤语)'
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.task import Task

TASK_SCHEMA = pa.schema([
    ("id", pa.string()), ("text", pa.string()), ("lang", pa.string()),
    ("emotion", pa.string()), ("intensity", pa.int8()), ("dialect", pa.string()),
    ("style", pa.string()), ("speed", pa.string()), ("speaker", pa.string()),
    ("speaker_wav", pa.string()), ("speaker_text", pa.string()), ("seed", pa.int64()),
])


def tasks_to_table(tasks: list[Task]) -> pa.Table:
    """Tasks as a table with :data:`TASK_SCHEMA` columns, in the given order."""
    rows = [t.to_row() for t in tasks]
    return pa.Table.from_pylist(rows, schema=TASK_SCHEMA)


def write_tasks(tasks: list[Task], path) -> Path:
    """Write ``tasks`` to the Parquet file ``path`` via a temp file and ``os.replace``, so readers
    never see half a file; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(tasks_to_table(tasks), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_tasks(path) -> list[Task]:
    """Read a tasks.parquet back into :class:`~engine.task.Task` records (extra columns ignored).

    Raises:
        ValueError: unreadable file or missing task columns (naming the file).
    """
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: cannot read tasks ({exc})") from None
    missing = [n for n in TASK_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"{path}: not a tasks table (missing columns {', '.join(missing)})")
    return [Task.from_row(row) for row in table.select(TASK_SCHEMA.names).to_pylist()]
