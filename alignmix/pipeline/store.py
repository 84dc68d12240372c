"""The on-disk layout of a built mix, with atomic writes, checksums and resumable stages.

    <out>/<mix-name>/
      data/train-00000-of-00004.parquet ...   Hugging Face shard names, zstd parquet
      rejected/<stage>.parquet                every dropped row with its reason
      stats/<stage>.json                      per-stage statistics (+ the stage's fingerprint, for resume)
      manifest.json                           recipe, recipe hash, seed, version, per-shard rows + sha256

Parquet is written by pyarrow with fixed settings (zstd level 3, fixed row-group size, no timestamps), so the
same rows give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from alignmix.pipeline.schema import RowKind, empty_frame, row_kind, to_arrow

PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": True,
    "write_statistics": True,
    "version": "2.6",
}
ROW_GROUP_SIZE = 10_000
ROWS_PER_SHARD = 100_000


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(*parts: Any) -> str:
    """A hash of everything that produced an output: configs, input checksums, the version constant."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str) + b"\n")


def read_json(path: str | Path) -> Any:
    return orjson.loads(Path(path).read_bytes())


def write_table(table: pa.Table, path: str | Path) -> str:
    """Write one parquet file atomically; return its sha256."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, **PARQUET_OPTIONS)
    return sha256_file(path)


def write_frame(frame: pl.DataFrame, path: str | Path) -> str:
    """Write a frame (rejected rows, intermediate results) as one parquet file; return its sha256."""
    return write_table(_plain_types(frame.to_arrow()), path)


def _plain_types(table: pa.Table) -> pa.Table:
    return table.cast(pa.schema([pa.field(f.name, _small_types(f.type)) for f in table.schema]))


def _small_types(t: pa.DataType) -> pa.DataType:
    """polars writes large_string/large_list; datasets and TRL are happiest with the plain types."""
    if pa.types.is_large_string(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list(t):
        return pa.list_(_small_types(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _small_types(f.type)) for f in t])
    return t


def shard_name(split: str, index: int, total: int) -> str:
    return f"{split}-{index:05d}-of-{total:05d}.parquet"


class ShardWriter:
    """Stream rows into `data/<split>-NNNNN-of-MMMMM.parquet` shards of a fixed row count.

    The total is only known at the end, so full shards are written under temporary names and renamed by
    `close()`. Each shard is written one row group (ROW_GROUP_SIZE rows) at a time, so rows never sit in
    memory beyond one row group's worth of Arrow batches; the bytes are those of one `pq.write_table` call.
    """

    def __init__(self, data_dir: str | Path, split: str, kind: RowKind, rows_per_shard: int = ROWS_PER_SHARD):
        self.data_dir = Path(data_dir)
        self.split = split
        self.kind = kind
        self.rows_per_shard = rows_per_shard
        self._pending: list[pa.Table] = []  # the row group being filled
        self._pending_rows = 0
        self._part: pq.ParquetWriter | None = None  # the shard being written
        self._part_rows = 0
        self._parts: list[tuple[Path, int]] = []
        self.data_dir.mkdir(parents=True, exist_ok=True)

    def write(self, frame: pl.DataFrame | pa.Table) -> None:
        table = frame if isinstance(frame, pa.Table) else to_arrow(frame, self.kind)
        while table.num_rows:
            room = min(self.rows_per_shard - self._part_rows, ROW_GROUP_SIZE - self._pending_rows)
            head, table = table.slice(0, room), table.slice(room)
            self._pending.append(head)
            self._pending_rows += head.num_rows
            self._part_rows += head.num_rows
            if self._pending_rows == ROW_GROUP_SIZE or self._part_rows == self.rows_per_shard:
                self._write_row_group()
            if self._part_rows == self.rows_per_shard:
                self._close_part()

    def _write_row_group(self) -> None:
        table = pa.concat_tables(self._pending) if self._pending else to_arrow(empty_frame(self.kind), self.kind)
        table = _plain_types(table)
        if self._part is None:
            path = self._part_path(len(self._parts))
            self._part = pq.ParquetWriter(path, table.schema, **PARQUET_OPTIONS)
        self._part.write_table(table, row_group_size=ROW_GROUP_SIZE)
        self._pending, self._pending_rows = [], 0

    def _part_path(self, index: int) -> Path:
        return self.data_dir / f".{self.split}-part-{index:05d}.parquet.tmp"

    def _close_part(self) -> None:
        assert self._part is not None
        self._part.close()
        self._parts.append((self._part_path(len(self._parts)), self._part_rows))
        self._part, self._part_rows = None, 0

    def close(self) -> list[dict[str, Any]]:
        """Write the last shard, rename all to their final names, remove stale shards; return shard records."""
        if self._pending or (self._part is None and not self._parts):  # the rest, or one empty shard
            self._write_row_group()
        if self._part is not None:
            self._close_part()
        total = len(self._parts)
        shards = []
        for i, (part, rows) in enumerate(self._parts):
            final = self.data_dir / shard_name(self.split, i, total)
            os.replace(part, final)
            shards.append({"file": f"data/{final.name}", "split": self.split, "rows": rows, "sha256": sha256_file(final)})
        keep = {Path(s["file"]).name for s in shards}
        for old in self.data_dir.glob(f"{self.split}-*-of-*.parquet"):
            if old.name not in keep:
                old.unlink()
        return shards


def write_shards(
    frame: pl.DataFrame, data_dir: str | Path, split: str = "train", rows_per_shard: int = ROWS_PER_SHARD
) -> list[dict[str, Any]]:
    """Write a whole frame as the shards of one split; return per-shard records (file, rows, sha256)."""
    writer = ShardWriter(data_dir, split, row_kind(frame), rows_per_shard)
    writer.write(frame)
    return writer.close()


class MixStore:
    """A mix directory: paths, stage outputs, and the fingerprints that let a rerun skip finished stages."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def rejected_path(self, stage: str) -> Path:
        return self.root / "rejected" / f"{stage}.parquet"

    def stats_path(self, stage: str) -> Path:
        return self.root / "stats" / f"{stage}.json"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def write_rejected(self, stage: str, rejected: pl.DataFrame) -> str:
        return write_frame(rejected, self.rejected_path(stage))

    def write_stats(self, stage: str, stats: dict[str, Any]) -> None:
        write_json(self.stats_path(stage), stats)

    def read_stats(self, stage: str) -> dict[str, Any] | None:
        p = self.stats_path(stage)
        return read_json(p) if p.exists() else None

    def all_stats(self) -> dict[str, dict[str, Any]]:
        d = self.root / "stats"
        return {p.stem: read_json(p) for p in sorted(d.glob("*.json"))} if d.exists() else {}

    def shard_files(self, split: str | None = None) -> list[Path]:
        pattern = f"{split}-*-of-*.parquet" if split else "*-of-*.parquet"
        return sorted(self.data_dir.glob(pattern))

    def splits(self) -> list[str]:
        return sorted({p.name.split("-")[0] for p in self.shard_files()})

    def scan(self, split: str | None = None) -> pl.LazyFrame:
        files = self.shard_files(split)
        if not files:
            raise FileNotFoundError(f"{self.data_dir} holds no shards{f' for split {split!r}' if split else ''}")
        return pl.scan_parquet([str(f) for f in files])

    def read(self, split: str | None = None) -> pl.DataFrame:
        return self.scan(split).collect()

    def read_rejected(self) -> pl.DataFrame:
        files = sorted((self.root / "rejected").glob("*.parquet"))
        frames = [pl.read_parquet(f) for f in files]
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.manifest_path, manifest)

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            raise FileNotFoundError(f"{self.root} has no manifest.json: is it a directory alignmix wrote?")
        return read_json(self.manifest_path)

    # --- resume -------------------------------------------------------------------------------------------

    def is_done(self, stage: str, stage_fingerprint: str) -> bool:
        """True when `stage` finished with this fingerprint and every output it recorded is intact."""
        stats = self.read_stats(stage)
        if not stats or stats.get("fingerprint") != stage_fingerprint:
            return False
        for rel, digest in stats.get("outputs", {}).items():
            p = self.root / rel
            if not p.exists() or sha256_file(p) != digest:
                return False
        return True

    def mark_done(self, stage: str, stage_fingerprint: str, stats: dict[str, Any], outputs: Iterable[str | Path]) -> None:
        """Record a finished stage: its stats, fingerprint and the checksums of its outputs (paths under root)."""
        recorded = {}
        for p in outputs:
            p = Path(p)
            try:
                rel = p.relative_to(self.root)
            except ValueError:  # already relative to the root
                rel = p
            recorded[str(rel)] = sha256_file(self.root / rel)
        self.write_stats(stage, {**stats, "fingerprint": stage_fingerprint, "outputs": recorded})
