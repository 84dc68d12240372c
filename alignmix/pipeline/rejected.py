"""Rejected records of ingest: their schema, and a writer that streams them into one parquet file.

A record that did not become a row keeps its raw text and where it was (file, line, record), with the
`drop_stage` / `drop_reason` / `drop_detail` every stage writes:

    >>> REJECTED_SCHEMA.names[:4], REJECTED_SCHEMA.names[-3:]
    (['raw', 'file', 'line', 'record'], ['drop_stage', 'drop_reason', 'drop_detail'])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from alignmix.pipeline.readers import RawRecord
from alignmix.pipeline.schema import RowError
from alignmix.pipeline.store import PARQUET_OPTIONS, atomic_path

REJECTED_SCHEMA = pa.schema(
    [
        ("raw", pa.string()),
        ("file", pa.string()),
        ("line", pa.int64()),
        ("record", pa.int64()),
        ("source", pa.string()),
        ("source_id", pa.string()),
        ("id", pa.string()),
        ("drop_stage", pa.string()),
        ("drop_reason", pa.string()),
        ("drop_detail", pa.string()),
    ]
)


def rejected_record(rec: RawRecord, source: str, err: RowError, *, source_id: str | None = None,
                    row_id: str | None = None) -> dict[str, Any]:
    """The REJECTED_SCHEMA dict of one record that ingest refused with `err`."""
    return {
        "raw": rec.raw_text(),
        "file": rec.file,
        "line": rec.line,
        "record": rec.record,
        "source": source,
        "source_id": source_id,
        "id": row_id,
        "drop_stage": "ingest",
        "drop_reason": err.reason,
        "drop_detail": err.detail(),
    }


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts to an Arrow table: one struct array, then its fields (10x faster than Table.from_pylist)."""
    return pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema)))).cast(schema)


class RejectedWriter:
    """Rejected records streamed into one parquet file, renamed into place when complete."""

    FLUSH_ROWS = 10_000

    def __init__(self, path: Path):
        self.path = path
        self._atomic = atomic_path(path)
        self._tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, REJECTED_SCHEMA, **PARQUET_OPTIONS)
        self._buffer: list[dict[str, Any]] = []

    def add(self, rows: list[dict[str, Any]]) -> None:
        self._buffer.extend(rows)
        while len(self._buffer) >= self.FLUSH_ROWS:  # whole row groups: the bytes do not depend on batching
            self._writer.write_table(rows_to_table(self._buffer[: self.FLUSH_ROWS], REJECTED_SCHEMA))
            self._buffer = self._buffer[self.FLUSH_ROWS :]

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(rows_to_table(self._buffer, REJECTED_SCHEMA))
            self._buffer = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        self._atomic.__exit__(None, None, None)

    def abort(self, exc: BaseException) -> None:
        self._writer.close()
        try:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
        except BaseException:
            pass  # the context manager re-raises after removing the temporary file
