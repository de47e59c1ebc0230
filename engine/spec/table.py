"""tasks.parquet: the expanded tasks as one Arrow table, written atomically.

    >>> write_tasks(spec.expand(), "RUN/tasks.parquet")       # doctest: +SKIP
    >>> Instruction.of(read_tasks("RUN/tasks.parquet")[0]).tags()  # doctest: +SKIP
    '(高兴3)(粤语)'
    >>> for batch in task_batches("RUN/tasks.parquet", rows=1024): ...  # doctest: +SKIP

``task_batches`` streams the file (a few thousand rows in memory at a time, whatever its size).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from manifests.atomic import atomic_path
from manifests.errors import UserError
from manifests.record import TASK_SCHEMA, Task


def tasks_to_table(tasks: list[Task]) -> pa.Table:
    """Tasks as a table with :data:`TASK_SCHEMA` columns, in the given order."""
    return pa.Table.from_pylist([t.to_row() for t in tasks], schema=TASK_SCHEMA)


def write_tasks(tasks: list[Task], path) -> Path:
    """Write ``tasks`` to the Parquet file ``path`` atomically (readers never see half a file);
    returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(tasks_to_table(tasks), tmp)
    return path


def read_tasks(path) -> list[Task]:
    """Read a tasks.parquet back into :class:`~engine.task.Task` records (extra columns ignored).

    Raises:
        UserError: unreadable file or missing task columns (naming the file).
    """
    try:
        table = pq.read_table(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: cannot read tasks ({exc})") from None
    missing = [n for n in TASK_SCHEMA.names if n not in table.column_names]
    if missing:
        raise UserError(f"{path}: not a tasks table (missing columns {', '.join(missing)})")
    return [Task.from_row(row) for row in table.select(TASK_SCHEMA.names).to_pylist()]


def task_batches(path, rows: int = 1024, limit: int | None = None,
                 columns: list[str] | None = None) -> Iterator[pa.Table]:
    """Stream a tasks.parquet in tables of at most ``rows`` rows (file order), never holding more.

    Args:
        limit: stop after the first ``limit`` tasks (None: all).
        columns: the task columns to read (default all of :data:`TASK_SCHEMA`).
    Raises:
        UserError: unreadable file or missing task columns (naming the file).
    """
    columns = list(columns or TASK_SCHEMA.names)
    try:
        source = pq.ParquetFile(str(path))
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: cannot read tasks ({exc})") from None
    missing = [n for n in columns if n not in source.schema_arrow.names]
    if missing:
        raise UserError(f"{path}: not a tasks table (missing columns {', '.join(missing)})")
    left = limit
    with source:
        for batch in source.iter_batches(batch_size=rows, columns=columns):
            if left is not None:
                if left <= 0:
                    return
                batch, left = batch.slice(0, left), left - min(left, batch.num_rows)
            yield pa.Table.from_batches([batch]).cast(pa.schema([TASK_SCHEMA.field(c) for c in columns]))
