"""The manifest row: one per task attempt, the record every stage adds columns to.

Synthesize fills the task fields, the outcome (``status``/``error``), token and audio sizes, where
the sample lives (``shard``, ``offset``) and lineage. The filter stage fills ``cer``, ``wer``,
``ss``, ``dnsmos_*``, ``adherence_*``, ``quality_flags``, ``accepted`` and ``reject_reason``; until then they are null.
"""
from __future__ import annotations

import pyarrow as pa

from manifests.record import TASK_SCHEMA

MANIFEST_SCHEMA = pa.schema(
    list(TASK_SCHEMA)
    + [
        ("attempt", pa.int16()),
        ("status", pa.string()),          # "ok" or "error"
        ("error", pa.string()),           # why the teacher failed; "" when ok
        ("n_tokens", pa.int32()),
        ("duration_s", pa.float32()),     # audio carried by the tokens (120 ms per 5 ids)
        ("shard", pa.string()),           # shards/shard-000000.tar, relative to the run
        ("offset", pa.int64()),           # byte offset of the sample's first member in the tar
        ("cer", pa.float32()), ("wer", pa.float32()), ("ss", pa.float32()),
        ("quality_flags", pa.list_(pa.string())),
        ("accepted", pa.bool_()),
        ("reject_reason", pa.string()),
        ("asr_text", pa.string()), ("asr_model", pa.string()),   # what the CER figure came from
        ("ss_model", pa.string()), ("ss_ref", pa.string()),      # embedding model; prompt/source
        # DNSMOS P.835 (1..5); null in manifests written before the column existed
        ("dnsmos_sig", pa.float32()), ("dnsmos_bak", pa.float32()), ("dnsmos_ovrl", pa.float32()),
        # instruction adherence (filters.adherence); null where a check is off or does not apply
        ("adherence_lang", pa.string()), ("adherence_lang_prob", pa.float32()),
        ("adherence_emotion", pa.float32()), ("adherence_rate", pa.float32()),
        ("adherence_beat_cv", pa.float32()), ("adherence_voiced", pa.float32()),
        ("adherence_words", pa.float32()), ("adherence_ok", pa.bool_()), ("adherence_reason", pa.string()),
        ("filter_hash", pa.string()),
        ("spec_hash", pa.string()), ("teacher_id", pa.string()), ("codec_version", pa.string()),
        ("stepforge_version", pa.string()), ("created_at", pa.timestamp("s", tz="UTC")),
    ]
)


FILTER_COLUMNS = ["cer", "wer", "ss", "quality_flags", "accepted", "reject_reason", "asr_text",
                  "asr_model", "ss_model", "ss_ref", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl",
                  "adherence_lang", "adherence_lang_prob", "adherence_emotion", "adherence_rate",
                  "adherence_beat_cv", "adherence_voiced", "adherence_words", "adherence_ok",
                  "adherence_reason", "filter_hash"]
FILTER_SCHEMA = pa.schema([MANIFEST_SCHEMA.field("id"), MANIFEST_SCHEMA.field("attempt")]
                          + [MANIFEST_SCHEMA.field(c) for c in FILTER_COLUMNS])


def manifest_table(rows: list[dict], schema: pa.Schema = MANIFEST_SCHEMA) -> pa.Table:
    """Rows (dicts, missing columns as null) -> a table with the manifest (or given) schema."""
    columns = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.table(columns, schema=schema)
