"""Ingest: read a source in any supported format, convert it to rows, write shards, rejected rows and stats.

One source becomes one store folder (see store.py):

    <out>/data/train-00000-of-00001.parquet      the valid rows, SFT, prompt or preference schema
    <out>/rejected/ingest-<source>.parquet       every record that did not become a row: raw text, file, line,
                                                 drop_stage='ingest', drop_reason, drop_detail
    <out>/stats/ingest-<source>.json             rows in / kept / dropped per reason, format, shards, fingerprint

Rows in = kept + rejected, always. A record counts as one row, except a Self-Instruct task with several
instances, which gives one row per instance; a record that cannot be read or converted is one rejected row.
A second row with the same content (same id) in one source is rejected as `duplicate_content`, its detail
naming the first row's source_id, so no id appears twice.

    >>> stats = ingest_source(SourceSpec(name="uf", path="eval_clean.jsonl"), "out/uf")     # doctest: +SKIP
    >>> stats["rows_in"], stats["rows_kept"], stats["dropped"]
    (200, 200, {})

A source holds one row kind (`stats["kind"]`): its format's, or for conversation formats `prompt` when its first
records have no answer (see `convert.detect_kind`; a spec's `kind` decides instead).

The parts live in their own modules: `convert` (format and kind detection, batch conversion in worker
processes, dropping repeated ids with `seen_ids`), `rejected` (the rejected records' schema and writer),
`ingest_summary` (what the CLI prints). Their public names are importable from here too.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from alignmix import __version__
from alignmix.pipeline.columns import ColumnMap
from alignmix.pipeline.convert import (
    DETECT_SAMPLE,
    Converted,
    IngestError,
    SourceRun,
    adapter_named,
    convert_batches,
    detect_adapter,
    detect_kind,
    locate_source,
)
from alignmix.pipeline.ingest_summary import IngestSummary
from alignmix.pipeline.readers import ACCEPTED_INPUTS, BATCH_SIZE, Location, Progress, ReadError, parse_source_string
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.rejected import REJECTED_SCHEMA, RejectedWriter, rows_to_table
from alignmix.pipeline.schema import POLARS_SCHEMAS, empty_frame
from alignmix.pipeline.seen_ids import SeenIds
from alignmix.pipeline.stage import histogram
from alignmix.pipeline.store import ROWS_PER_SHARD, MixStore, ShardWriter, fingerprint

# Bump when a conversion changes what rows come out, so finished ingests are redone instead of reused.
# v2: prompt-only records of conversation formats become prompt rows; the `prompts` format.
INGEST_VERSION = "ingest-v2"
SPLIT = "train"

# --- writing one source ----------------------------------------------------------------------------------------


def ingest_source(
    spec: SourceSpec,
    out_dir: str | Path,
    rows_per_shard: int = ROWS_PER_SHARD,
    *,
    workers: int | None = 1,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[Progress, int], None] | None = None,
    fast: bool = True,
) -> dict[str, Any]:
    """Ingest one recipe source into the store folder `out_dir` (its own folder: data/ holds this source only).

    Returns the stats written to stats/ingest-<name>.json. Resumable: when the source's files (paths, sizes,
    mtimes), the spec, `rows_per_shard` and INGEST_VERSION match a finished run whose outputs are intact, the
    finished stats are returned and nothing is read (`stats["resumed"]` is True).
    `workers` > 1 parses and converts in that many processes, `batch_size` records at a time; neither changes
    a byte of the output (the script that calls it with workers > 1 needs an `if __name__ == "__main__":` guard).
    `workers=None` (what `alignmix ingest` passes unless told) takes `default_workers(...)` from the CPU count
    and the source's size; the default stays 1, so a script without that guard keeps working.
    `on_progress(progress, rows_in)` is called after each batch. `fast=False` converts every batch record by
    record (the reference the fast path is tested against; same bytes, slower).
    """
    store = MixStore(out_dir)
    stage = f"ingest-{spec.name}"
    loc = locate_source(spec)
    try:
        identity = loc.identity()
    except OSError as err:
        raise IngestError(f"{loc.name}: cannot be read: {err}") from None
    except ReadError as err:
        raise IngestError(str(err)) from None
    stage_fp = fingerprint(INGEST_VERSION, spec.model_dump(mode="json"), identity, rows_per_shard)
    if store.is_done(stage, stage_fp):
        stats = store.read_stats(stage) or {}
        return {**stats, "resumed": True}

    start = time.perf_counter()
    if workers is None:
        workers = default_workers(loc)
    run = SourceRun(spec.name)
    progress = Progress()
    writer: BackgroundShards | None = None
    rejected = RejectedWriter(store.rejected_path(stage))
    try:
        for converted in convert_batches(spec, run, progress, batch_size=batch_size, workers=workers,
                                         fast=fast):
            if writer is None:
                assert run.kind is not None
                writer = BackgroundShards(ShardWriter(store.data_dir, SPLIT, run.kind, rows_per_shard))
            if converted.table.num_rows:
                writer.write(converted.table)
            rejected.add(converted.rejected)
            if on_progress is not None:
                on_progress(progress, run.rows_in)
        if writer is None:  # an empty source with an explicit format: one empty shard, like `datasets` does
            assert run.kind is not None
            writer = BackgroundShards(ShardWriter(store.data_dir, SPLIT, run.kind, rows_per_shard))
        shards = writer.close()
        rejected.close()
    except BaseException as exc:
        rejected.abort(exc)
        if writer is not None:
            writer.stop()
            _discard_parts(store.data_dir)
        raise

    stats = _stats(spec, loc, run, store, start, shards)
    outputs = [store.root / s["file"] for s in shards] + [store.rejected_path(stage)]
    store.mark_done(stage, stage_fp, stats, outputs)
    return {**stats, "resumed": False}


# Below this, worker processes cost more to start (each imports pyarrow, polars, orjson: ~1-2 s) than they save.
WORKERS_FROM_BYTES = 64 << 20


def default_workers(loc: Location, cpus: int | None = None) -> int:
    """Worker processes for a source when none are asked for: one per CPU but the one this process needs
    (it reads, drops duplicates and, in a thread, compresses parquet), at most 4, for local files of
    WORKERS_FROM_BYTES or more; else 1 (conversion in this process).

    On two CPUs that is 1: the parquet thread already takes the second, and measured on a shared 2-CPU machine
    (bench/ingest.py) two worker processes were slower than none, the batches being pickled both ways.

    >>> big = Location("files", "big.jsonl", files=[])
    >>> default_workers(big, cpus=2), default_workers(big, cpus=16)   # an empty file list: 0 bytes
    (1, 1)
    """
    cpus = cpus or os.cpu_count() or 1
    if cpus <= 2 or loc.kind != "files":
        return 1
    try:
        size = sum(f.stat().st_size for f in loc.files)
    except OSError:
        return 1
    return min(cpus - 1, 4) if size >= WORKERS_FROM_BYTES else 1


class _Chunks:
    """Tables re-cut into tables of exactly `size` rows (one Arrow chunk each; the last one shorter).

    Parquet's bytes depend on how a column is chunked, and batches come in whatever sizes reading and dropping
    cut them (a JSON Lines block ends at a blank line or after BLOCK_BYTES): re-cut, the shards' bytes depend on
    the rows alone, and equal what batches of BATCH_SIZE records without rejects always gave.
    """

    def __init__(self, size: int = BATCH_SIZE):
        self.size = size
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, table: pa.Table) -> Iterator[pa.Table]:
        self._pending.append(table)
        self._rows += table.num_rows
        while self._rows >= self.size:
            joined = pa.concat_tables(self._pending)
            rest = joined.slice(self.size)
            yield joined.slice(0, self.size).combine_chunks()
            self._pending, self._rows = [rest], rest.num_rows

    def rest(self) -> Iterator[pa.Table]:
        if self._rows:
            yield pa.concat_tables(self._pending).combine_chunks()
        self._pending, self._rows = [], 0


class BackgroundShards:
    """A ShardWriter fed from a thread, so that compressing and writing parquet (which releases the GIL)
    overlaps with reading and converting the next batches. Tables are written in the order given, by one
    thread, re-cut into BATCH_SIZE rows (`_Chunks`), so the shards are the bytes ShardWriter writes directly from
    such tables, however the batches were cut; at most `depth` tables wait (memory stays bounded). An error in
    the thread is raised by the next `write` or by `close`.
    """

    def __init__(self, shards: ShardWriter, depth: int = 4):
        self.shards = shards
        self._chunks = _Chunks()
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="alignmix-shards", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            table = self._queue.get()
            if self._error is None:
                try:
                    for chunk in self._chunks.add(table) if table is not None else self._chunks.rest():
                        self.shards.write(chunk)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc
            if table is None:
                return

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def write(self, table: pa.Table) -> None:
        self._raise()
        self._queue.put(table)

    def stop(self) -> None:
        """Let the thread finish (after an error elsewhere); nothing more is written."""
        self._error = self._error or RuntimeError("stopped")
        self._queue.put(None)
        self._thread.join()

    def close(self) -> list[dict[str, Any]]:
        """Wait for the queued tables, then close the ShardWriter; its shard records."""
        self._queue.put(None)
        self._thread.join()
        self._raise()
        return self.shards.close()


def _stats(spec: SourceSpec, loc: Location, run: SourceRun, store: MixStore, start: float,
           shards: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The stats/ingest-<name>.json record (the StageStats fields, plus format, kind, shards and location)."""
    assert run.adapter is not None
    stage = f"ingest-{spec.name}"
    stats = {
        "stage": stage,
        "source": spec.name,
        "location": loc.name,
        "format": run.adapter.name,
        "kind": run.kind,
        "rows_in": run.rows_in,
        "rows_kept": run.rows_kept,
        "dropped": dict(sorted(run.dropped.items())),
        "seconds": round(time.perf_counter() - start, 3),
        "shards": shards or [],
        "rejected": str(store.rejected_path(stage).relative_to(store.root)),
        "distributions": _distributions(run),
        "config": spec.model_dump(mode="json", exclude_none=True),
        "alignmix_version": __version__,
    }
    assert stats["rows_in"] == stats["rows_kept"] + sum(stats["dropped"].values())
    return stats


def read_source(spec: SourceSpec, store: MixStore, workers: int = 1) -> pl.DataFrame:
    """Read one recipe source into memory for a mix: return its valid rows as a frame, and write its
    `rejected/ingest-<name>.parquet` and `stats/ingest-<name>.json` into `store` (no data/ shards).

    For sources that fit in memory (the rows are returned whole); `ingest_source` streams any size to shards.
    """
    stage = f"ingest-{spec.name}"
    loc = locate_source(spec)
    start = time.perf_counter()
    run = SourceRun(spec.name)
    tables: list[pa.Table] = []
    rejected = RejectedWriter(store.rejected_path(stage))
    try:
        for converted in convert_batches(spec, run, workers=workers):
            tables.append(converted.table)
            rejected.add(converted.rejected)
        rejected.close()
    except BaseException as exc:
        rejected.abort(exc)
        raise
    store.write_stats(stage, _stats(spec, loc, run, store, start, None))
    return _frame(tables, run)


def _discard_parts(data_dir: Path) -> None:
    """Remove a failed run's unfinished shard parts (ShardWriter writes them as hidden .tmp files)."""
    for part in data_dir.glob(f".{SPLIT}-part-*.parquet.tmp"):
        part.unlink(missing_ok=True)


def _distributions(run: SourceRun) -> dict[str, Any]:
    if not run.turns:
        return {}
    if run.kind == "prompt":
        return {
            "turns": histogram(pl.Series(run.turns, dtype=pl.UInt32), bins=10),
            "prompt_chars": histogram(pl.Series(run.response_chars, dtype=pl.UInt32)),
        }
    out = {
        "turns": histogram(pl.Series(run.turns, dtype=pl.UInt32), bins=10),
        "response_chars": histogram(pl.Series(run.response_chars, dtype=pl.UInt32)),
    }
    if run.rejected_chars:
        out = {
            "turns": out["turns"],
            "chosen_chars": out["response_chars"],
            "rejected_chars": histogram(pl.Series(run.rejected_chars, dtype=pl.UInt32)),
        }
    return out


def read_rows(spec: SourceSpec) -> pl.DataFrame:
    """The valid rows of a (small) source as one polars frame, with the exact row schema; rejects are dropped.

    >>> read_rows(SourceSpec(name="uf", path="eval_clean.jsonl")).height                     # doctest: +SKIP
    200
    """
    run = SourceRun(spec.name)
    tables = [converted.table for converted in convert_batches(spec, run)]
    return _frame(tables, run)


def _frame(tables: list[pa.Table], run: SourceRun) -> pl.DataFrame:
    """Converted tables as one polars frame with the exact row schema (also when there are no rows)."""
    assert run.kind is not None
    kind = run.kind
    if not tables:
        return empty_frame(kind)
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    return frame.cast(POLARS_SCHEMAS[kind])  # type: ignore[arg-type]


def read_rejected(spec: SourceSpec) -> pl.DataFrame:
    """The records of a (small) source that would be rejected, in REJECTED_SCHEMA."""
    run = SourceRun(spec.name)
    rejected: list[dict[str, Any]] = []
    for converted in convert_batches(spec, run):
        rejected.extend(converted.rejected)
    return pl.from_arrow(rows_to_table(rejected, REJECTED_SCHEMA))  # type: ignore[return-value]


# --- several sources, for the CLI --------------------------------------------------------------------------------


def source_name(text: str) -> str:
    """The default source name: the file stem (without .jsonl.gz etc.), the folder name, or the dataset name.

    >>> source_name("data/ultrafeedback/eval_clean.jsonl.gz"), source_name("hf:HuggingFaceH4/ultrafeedback_binarized:test_prefs")
    ('eval_clean', 'ultrafeedback_binarized')
    """
    path, hf, _ = parse_source_string(text)
    base = Path(hf).name if hf else Path(path or "source").name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet"):
        base = base.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._-") or "source"


def spec_from_string(text: str, *, format: str | None = None, name: str | None = None,
                     columns: ColumnMap | None = None) -> SourceSpec:
    """A SourceSpec for a CLI source: a path, or hf:<dataset id>[:<split>]."""
    path, hf, split = parse_source_string(text)
    return SourceSpec(name=name or source_name(text), path=path, hf=hf, split=split, format=format, columns=columns)


def ingest_sources(
    sources: list[str | SourceSpec],
    out: str | Path,
    format: str | None = None,
    name: str | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    progress: bool = False,
    workers: int | None = 1,
    columns: ColumnMap | None = None,
) -> IngestSummary:
    """Ingest each source into a store folder: `out` itself for one source, `out/<name>/` for several.

    `columns` (for sources given as strings) names the fields of a file in no known format (see `columns`).

    Also writes manifest.json in each folder (source, format, shards with rows and sha256).
    """
    out = Path(out)
    if format is not None:
        adapter_named(format)  # an unknown --format fails before anything is read
        if columns is not None:
            raise IngestError("give --format or --columns, not both: a column mapping is its own format")
    if name is not None and len(sources) > 1:
        raise IngestError("--name names a single source; give one source, or drop --name to use the file stems")
    specs = [s if isinstance(s, SourceSpec) else spec_from_string(s, format=format, name=name, columns=columns)
             for s in sources]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise IngestError(f"several sources would be named {repeated}: ingest them one at a time with --name")
    folders = [out] if len(specs) == 1 else [out / s.name for s in specs]
    results = []
    for spec, folder in zip(specs, folders):
        stats = _ingest_with_progress(spec, folder, rows_per_shard, workers) if progress else ingest_source(
            spec, folder, rows_per_shard, workers=workers)
        MixStore(folder).write_manifest({
            "kind": "ingest",
            "alignmix_version": __version__,
            "source": spec.model_dump(mode="json", exclude_none=True),
            "format": stats["format"],
            "row_kind": stats["kind"],
            "rows": stats["rows_kept"],
            "shards": stats["shards"],
        })
        results.append(stats)
    return IngestSummary(out, results, folders)


def _ingest_with_progress(spec: SourceSpec, folder: Path, rows_per_shard: int, workers: int | None
                          ) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Bar(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[rows]}"),
             TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(spec.name, total=None, rows="")

        def update(p: Progress, rows: int) -> None:
            bar.update(task, completed=p.done, total=p.total, rows=f"{rows:,} rows")

        return ingest_source(spec, folder, rows_per_shard, workers=workers, on_progress=update)


__all__ = [
    "ACCEPTED_INPUTS",
    "DETECT_SAMPLE",
    "Converted",
    "SourceRun",
    "detect_adapter",
    "detect_kind",
    "INGEST_VERSION",
    "IngestError",
    "IngestSummary",
    "REJECTED_SCHEMA",
    "SeenIds",
    "convert_batches",
    "default_workers",
    "ingest_source",
    "ingest_sources",
    "read_rejected",
    "read_rows",
    "read_source",
    "source_name",
    "spec_from_string",
]
