"""Manifest rows filled with their filter verdicts, one journal fragment at a time.

    index = VerdictIndex(run.verdict_table())
    for part in run.journal_parts():
        table = index.fill(pq.read_table(part))     # the filter columns from the last verdict

The index keeps the verdicts as Arrow columns, deduplicated to the last verdict of each
(id, attempt), and a sorted array of their keys (:class:`KeySet`); filling a fragment is a binary
search per row, so a manifest is merged in one pass whatever its size, holding the verdicts and
one fragment.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from manifests.schema import FILTER_COLUMNS, MANIFEST_SCHEMA


def row_keys(table: pa.Table) -> np.ndarray:
    """``id`` and ``attempt`` of each row as one bytes key (a numpy ``S`` array, sortable)."""
    if table.num_rows == 0:
        return np.array([], dtype="S1")
    keys = pc.binary_join_element_wise(table.column("id"), pc.cast(table.column("attempt"), pa.string()), "\x1f")
    return np.array(keys.cast(pa.binary()).to_pylist(), dtype="S")


class KeySet:
    """A sorted set of :func:`row_keys` (a numpy ``S`` array: a few dozen bytes a key); membership
    of a table's rows is one binary search each."""

    def __init__(self, keys: np.ndarray):
        self.keys = np.unique(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def positions(self, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(where each row's key is or would be, whether it is there)."""
        keys = row_keys(table)
        if not len(self.keys):
            return np.zeros(len(keys), dtype=np.int64), np.zeros(len(keys), dtype=bool)
        where = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return where, self.keys[where] == keys

    def contains(self, table: pa.Table) -> np.ndarray:
        """Whether each row of ``table`` (``id``, ``attempt``) has its key in the set."""
        return self.positions(table)[1]


class VerdictIndex:
    """The last verdict of each (id, attempt) among ``verdicts`` (rows in commit order, with
    ``id``, ``attempt`` and the :data:`~manifests.schema.FILTER_COLUMNS`)."""

    def __init__(self, verdicts: pa.Table):
        keys = row_keys(verdicts)
        order = np.argsort(keys, kind="stable")  # equal keys keep their commit order
        keys = keys[order]
        last = np.ones(len(keys), dtype=bool)
        last[:-1] = keys[:-1] != keys[1:]
        self.keys = KeySet(keys[last])
        self.rows = order[last]  # the verdict row of each key (no copy of the verdicts)
        self.verdicts = verdicts.select(FILTER_COLUMNS)

    def __len__(self) -> int:
        return len(self.keys)

    def fill(self, table: pa.Table) -> pa.Table:
        """``table`` (manifest rows) with its filter columns set from the verdicts; rows without
        one keep theirs (null until filtered)."""
        if not len(self.keys) or table.num_rows == 0:
            return table
        where, found = self.keys.positions(table)
        take = pa.array(self.rows[where], mask=~found, type=pa.int64())
        for name in FILTER_COLUMNS:
            column = self.verdicts.column(name).take(take)
            table = table.set_column(table.schema.get_field_index(name), MANIFEST_SCHEMA.field(name), column)
        return table
