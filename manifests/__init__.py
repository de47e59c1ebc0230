"""Record schema, shard writer/reader, Parquet manifest and the run directory."""
from manifests.atomic import atomic_path, write_json
from manifests.errors import UserError
from manifests.run import RunDir, RunError
from manifests.schema import MANIFEST_SCHEMA, TASK_SCHEMA, manifest_table
from manifests.shards import (ShardReadError, ShardWriter, json_bytes, npy_bytes, npy_load, read_sample, sample_key,
                              shard_name)

__all__ = [
    "MANIFEST_SCHEMA", "RunDir", "RunError", "ShardReadError", "ShardWriter", "TASK_SCHEMA", "atomic_path",
    "json_bytes", "manifest_table", "npy_bytes", "npy_load", "read_sample", "sample_key", "shard_name", "UserError",
    "write_json",
]
