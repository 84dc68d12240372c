"""Ingest: read a source in any supported format, convert it to rows, write shards, rejected rows and stats.

One source becomes one store folder (see store.py):

    <out>/data/train-00000-of-00001.parquet      the valid rows, SFT or preference schema
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
"""

from __future__ import annotations

import functools
import multiprocessing
import re
import time
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from alignmix import __version__
from alignmix.pipeline.adapters import ADAPTERS, Adapter, UnknownFormat, formats_help, get_adapter
from alignmix.pipeline.readers import (
    ACCEPTED_INPUTS,
    BATCH_SIZE,
    Location,
    Progress,
    RawRecord,
    ReadError,
    locate,
    parse_source_string,
    read_batches,
)
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.schema import POLARS_SCHEMAS, SCHEMAS, RowError, empty_frame
from alignmix.pipeline.stage import histogram
from alignmix.pipeline.store import PARQUET_OPTIONS, ROWS_PER_SHARD, MixStore, ShardWriter, atomic_path, fingerprint

# Bump when a conversion changes what rows come out, so finished ingests are redone instead of reused.
INGEST_VERSION = "ingest-v1"
DETECT_SAMPLE = 100  # records looked at to detect the format: a few broken ones among them do not mislead it
SPLIT = "train"

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


class IngestError(Exception):
    """A source that cannot be ingested at all: unreadable, or in no recognised format. Names the file."""


# --- duplicate detection within a source ---------------------------------------------------------------------


class SeenIds:
    """The content ids seen so far in one source, each with the source_id of the first row that had it.

    Kept as sorted numpy arrays of 64-bit id prefixes (plus a small dict of recent ones), so a source costs
    16 bytes per row instead of the ~150 of a Python dict of hex strings: ingest memory stays flat enough to
    stream files of millions of rows. Two different rows share a 64-bit prefix with odds of about n^2 / 2^65
    (1e-8 at 500k rows).

    >>> seen = SeenIds()
    >>> seen.first_seen(["00ff" * 8, "00ff" * 8], ["0", "1"])
    [None, '0']
    """

    MERGE_EVERY = 65_536

    def __init__(self) -> None:
        self._keys = np.empty(0, dtype=np.uint64)
        self._vals = np.empty(0, dtype=np.int64)  # source_id as an integer, or -1: look in _named
        self._named: dict[int, str] = {}  # first source_ids that are not plain integers (rare)
        self._pending: dict[int, str] = {}

    def first_seen(self, ids: list[str], source_ids: list[str]) -> list[str | None]:
        """For each row (in order): None if its id is new (and remember it), else the first row's source_id."""
        keys = np.array([int(i[:16], 16) for i in ids], dtype=np.uint64)
        pos = np.searchsorted(self._keys, keys)
        found = pos < self._keys.size
        found[found] = self._keys[pos[found]] == keys[found]
        out: list[str | None] = []
        for key, hit, p, sid in zip(keys.tolist(), found.tolist(), pos.tolist(), source_ids):
            if hit:
                v = int(self._vals[p])
                out.append(str(v) if v >= 0 else self._named[key])
            elif key in self._pending:
                out.append(self._pending[key])
            else:
                self._pending[key] = sid
                out.append(None)
        if len(self._pending) >= self.MERGE_EVERY:
            self._merge()
        return out

    def _merge(self) -> None:
        keys = np.fromiter(self._pending.keys(), dtype=np.uint64, count=len(self._pending))
        vals = np.empty(keys.size, dtype=np.int64)
        for i, (key, sid) in enumerate(self._pending.items()):
            if sid.isdigit() and len(sid) < 18:
                vals[i] = int(sid)
            else:
                vals[i] = -1
                self._named[key] = sid
        keys, vals = np.concatenate([self._keys, keys]), np.concatenate([self._vals, vals])
        order = np.argsort(keys, kind="stable")
        self._keys, self._vals = keys[order], vals[order]
        self._pending = {}


# --- conversion ------------------------------------------------------------------------------------------------


@dataclass
class Converted:
    """One batch after conversion: the kept rows (an Arrow table in the row schema) and the rejected records
    (REJECTED_SCHEMA dicts, in file order)."""

    table: pa.Table
    rejected: list[dict[str, Any]]


@dataclass
class SourceRun:
    """Counts and per-row measurements of one source, filled in while its batches stream through."""

    name: str
    adapter: Adapter | None = None
    rows_in: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    turns: array = field(default_factory=lambda: array("I"))
    response_chars: array = field(default_factory=lambda: array("I"))
    rejected_chars: array = field(default_factory=lambda: array("I"))


def _reject(rec: RawRecord, source: str, err: RowError, *, source_id: str | None = None,
            row_id: str | None = None) -> dict[str, Any]:
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


def detect_adapter(records: list[RawRecord], loc: Location) -> Adapter:
    """The format most of the first parsable records match (ties go to the earlier format in ADAPTERS)."""
    votes: Counter[str] = Counter()
    sample = [r.value for r in records if r.error is None][:DETECT_SAMPLE]
    for value in sample:
        for adapter in ADAPTERS.values():
            if isinstance(value, dict) and adapter.detect(value):
                votes[adapter.name] += 1
                break
    if not votes:
        if not sample:
            raise IngestError(f"{loc.name}: no record could be parsed to detect the format; "
                              f"give the format explicitly (--format) if the file is right. Formats:\n{formats_help()}")
        first = sample[0]
        shown = sorted(first) if isinstance(first, dict) else f"a {type(first).__name__}, not an object"
        raise IngestError(f"{loc.name}: the records (fields {shown}) match no format. The formats accepted are:\n"
                          f"{formats_help()}")
    order = list(ADAPTERS)
    best = max(votes.items(), key=lambda kv: (kv[1], -order.index(kv[0])))
    return ADAPTERS[best[0]]


def convert_batches(spec: SourceSpec, run: SourceRun, progress: Progress | None = None,
                    batch_size: int = BATCH_SIZE, workers: int = 1) -> Iterator[Converted]:
    """Read `spec` and convert it batch by batch, filling `run` (format, counts, measurements).

    With workers > 1, batches are parsed and converted in that many processes while this one reads, drops
    duplicates and hands on the results in order: the output is the same as with one worker.
    Raises IngestError when the source cannot be read or its format not recognised.
    """
    loc = _locate(spec)
    batches = read_batches(loc, batch_size=batch_size, limit=spec.limit, progress=progress, parse=workers <= 1)
    try:
        head: list[list[RawRecord]] = []
        if spec.format is not None:
            run.adapter = _adapter(spec.format)
        else:
            seen_good = 0
            for batch in batches:  # buffer batches until enough parsable records to judge the format
                head.append(batch)
                seen_good += sum(r.ensure_parsed().error is None for r in batch)
                if seen_good >= DETECT_SAMPLE:
                    break
            if not head:
                raise IngestError(f"{loc.name}: holds no records; give --format to ingest an empty source")
            run.adapter = detect_adapter([r for b in head for r in b], loc)
        seen = SeenIds()
        jobs = _numbered(_chain(head, batches))
        convert = functools.partial(_convert_batch, run.adapter.name, run.name)
        for batch, part in _map_in_order(convert, jobs, workers):
            yield _keep_first_copies(batch, part, run, seen)
    except ReadError as err:
        raise IngestError(str(err)) from None


def _chain(head: list[list[RawRecord]], rest: Iterator[list[RawRecord]]) -> Iterator[list[RawRecord]]:
    yield from head
    yield from rest


def _numbered(batches: Iterator[list[RawRecord]]) -> Iterator[tuple[list[RawRecord], int]]:
    """Each batch with the source position of its first record (source_ids are positions)."""
    index = 0
    for batch in batches:
        yield batch, index
        index += len(batch)


def _map_in_order(fn: Callable[[list[RawRecord], int], _Part], jobs: Iterator[tuple[list[RawRecord], int]],
                  workers: int) -> Iterator[tuple[list[RawRecord], _Part]]:
    """(batch, fn(batch, index)) in input order; in `workers` processes when more than one, with at most
    2 * workers batches in flight so memory stays bounded."""
    if workers <= 1:
        for batch, index in jobs:
            yield batch, fn(batch, index)
        return
    # spawn, not fork: polars and pyarrow hold threads that a forked child would inherit half-alive
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending: deque[tuple[list[RawRecord], Future[_Part]]] = deque()
        for batch, index in jobs:
            pending.append((batch, pool.submit(fn, batch, index)))
            if len(pending) >= 2 * workers:
                done_batch, future = pending.popleft()
                yield done_batch, future.result()
        while pending:
            done_batch, future = pending.popleft()
            yield done_batch, future.result()


@dataclass
class _Part:
    """A converted batch before duplicates are dropped: what a worker process sends back (Arrow pickles
    fast; the rows as Python dicts would cost more to send than to convert)."""

    table: pa.Table
    ids: list[str]
    source_ids: list[str]
    owners: list[int]  # for each row, the offset of its record in the batch
    rejected: list[tuple[int, dict[str, Any]]]  # (offset, REJECTED_SCHEMA dict)
    turns: list[int]
    response_chars: list[int]
    rejected_chars: list[int]


def _convert_batch(adapter_name: str, source: str, batch: list[RawRecord], index: int) -> _Part:
    """Parse (when still needed) and convert one batch. Module-level, so a worker process can run it."""
    adapter = ADAPTERS[adapter_name]
    rows: list[dict[str, Any]] = []
    owners: list[int] = []
    rejected: list[tuple[int, dict[str, Any]]] = []
    for offset, rec in enumerate(batch):
        rec.ensure_parsed()
        source_id = str(index + offset)  # the record's 0-based position in the source
        if rec.error is not None:
            rejected.append((offset, _reject(rec, source, rec.error, source_id=source_id)))
            continue
        try:
            new = adapter.convert(rec.value, source=source, source_id=source_id)
        except RowError as err:
            rejected.append((offset, _reject(rec, source, err, source_id=source_id)))
            continue
        rows.extend(new)
        owners.extend([offset] * len(new))
    conv = "chosen" if adapter.kind == "preference" else "messages"
    return _Part(
        table=rows_to_table(rows, SCHEMAS[adapter.kind]),
        ids=[r["id"] for r in rows],
        source_ids=[r["source_id"] for r in rows],
        owners=owners,
        rejected=rejected,
        turns=[len(r[conv]) for r in rows],
        response_chars=[len(r[conv][-1]["content"]) for r in rows],
        rejected_chars=[len(r["rejected"][-1]["content"]) for r in rows] if conv == "chosen" else [],
    )


def _keep_first_copies(batch: list[RawRecord], part: _Part, run: SourceRun, seen: SeenIds) -> Converted:
    """Drop rows whose content came earlier in the source (`duplicate_content`); count what is left."""
    firsts = seen.first_seen(part.ids, part.source_ids)
    rejected = list(part.rejected)
    keep = [first is None for first in firsts]
    for i, first in enumerate(firsts):
        if first is not None:
            err = RowError("duplicate_content", None, first)  # detail: exactly the first row's source_id
            rejected.append((part.owners[i], _reject(batch[part.owners[i]], run.name, err,
                                                     source_id=part.source_ids[i], row_id=part.ids[i])))
    rejected.sort(key=lambda pair: pair[0])  # file order; stable, so a record's several rows keep theirs
    table = part.table if all(keep) else part.table.filter(pa.array(keep, type=pa.bool_()))
    run.rows_in += table.num_rows + len(rejected)
    run.rows_kept += table.num_rows
    run.dropped.update(r["drop_reason"] for _, r in rejected)
    run.turns.extend(v for v, k in zip(part.turns, keep) if k)
    run.response_chars.extend(v for v, k in zip(part.response_chars, keep) if k)
    run.rejected_chars.extend(v for v, k in zip(part.rejected_chars, keep) if k)
    return Converted(table, [r for _, r in rejected])


def _adapter(name: str) -> Adapter:
    try:
        return get_adapter(name)
    except UnknownFormat as err:
        raise IngestError(str(err)) from None


def _locate(spec: SourceSpec) -> Location:
    try:
        return locate(spec.path, hf=spec.hf, hf_config=spec.hf_config, split=spec.split)
    except ReadError as err:
        raise IngestError(str(err)) from None


# --- writing one source ----------------------------------------------------------------------------------------


def rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Row dicts to an Arrow table: one struct array, then its fields (10x faster than Table.from_pylist)."""
    return pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(schema)))).cast(schema)


class _RejectedWriter:
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


def ingest_source(
    spec: SourceSpec,
    out_dir: str | Path,
    rows_per_shard: int = ROWS_PER_SHARD,
    *,
    workers: int = 1,
    batch_size: int = BATCH_SIZE,
    on_progress: Callable[[Progress, int], None] | None = None,
) -> dict[str, Any]:
    """Ingest one recipe source into the store folder `out_dir` (its own folder: data/ holds this source only).

    Returns the stats written to stats/ingest-<name>.json. Resumable: when the source's files (paths, sizes,
    mtimes), the spec, `rows_per_shard` and INGEST_VERSION match a finished run whose outputs are intact, the
    finished stats are returned and nothing is read (`stats["resumed"]` is True).
    `workers` > 1 parses and converts in that many processes, `batch_size` records at a time; neither changes
    a byte of the output (the script that calls it with workers > 1 needs an `if __name__ == "__main__":` guard).
    `on_progress(progress, rows_in)` is called after each batch.
    """
    store = MixStore(out_dir)
    stage = f"ingest-{spec.name}"
    loc = _locate(spec)
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
    run = SourceRun(spec.name)
    progress = Progress()
    writer: ShardWriter | None = None
    rejected = _RejectedWriter(store.rejected_path(stage))
    try:
        for converted in convert_batches(spec, run, progress, batch_size=batch_size, workers=workers):
            if writer is None:
                assert run.adapter is not None
                writer = ShardWriter(store.data_dir, SPLIT, run.adapter.kind, rows_per_shard)
            if converted.table.num_rows:
                writer.write(converted.table)
            rejected.add(converted.rejected)
            if on_progress is not None:
                on_progress(progress, run.rows_in)
        if writer is None:  # an empty source with an explicit format: one empty shard, like `datasets` does
            assert run.adapter is not None
            writer = ShardWriter(store.data_dir, SPLIT, run.adapter.kind, rows_per_shard)
        shards = writer.close()
        rejected.close()
    except BaseException as exc:
        rejected.abort(exc)
        if writer is not None:
            _discard_parts(store.data_dir)
        raise

    stats = _stats(spec, loc, run, store, start, shards)
    outputs = [store.root / s["file"] for s in shards] + [store.rejected_path(stage)]
    store.mark_done(stage, stage_fp, stats, outputs)
    return {**stats, "resumed": False}


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
        "kind": run.adapter.kind,
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
    loc = _locate(spec)
    start = time.perf_counter()
    run = SourceRun(spec.name)
    tables: list[pa.Table] = []
    rejected = _RejectedWriter(store.rejected_path(stage))
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
    assert run.adapter is not None
    kind = run.adapter.kind
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


@dataclass
class IngestSummary:
    """What `ingest_sources` did: one stats dict per source, and where each went."""

    out: Path
    sources: list[dict[str, Any]]
    folders: list[Path]

    @property
    def rows_in(self) -> int:
        return sum(s["rows_in"] for s in self.sources)

    @property
    def rows_kept(self) -> int:
        return sum(s["rows_kept"] for s in self.sources)

    def render(self) -> Any:
        """A rich table: one line per source with its format, counts and drop reasons."""
        from rich.table import Table

        table = Table(title=f"ingested into {self.out}" + (" (one folder per source)" if len(self.folders) > 1 else ""),
                      title_justify="left")
        for col in ("source", "format", "rows in", "kept", "rejected", "reasons"):
            numeric = col in ("rows in", "kept", "rejected")
            table.add_column(col, justify="right" if numeric else "left", no_wrap=col != "reasons")
        for s in self.sources:
            dropped = s["dropped"]
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "-"
            table.add_row(s["source"] + (" (resumed)" if s.get("resumed") else ""), f"{s['format']} ({s['kind']})",
                          f"{s['rows_in']:,}", f"{s['rows_kept']:,}", f"{sum(dropped.values()):,}", reasons)
        return table


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


def spec_from_string(text: str, *, format: str | None = None, name: str | None = None) -> SourceSpec:
    """A SourceSpec for a CLI source: a path, or hf:<dataset id>[:<split>]."""
    path, hf, split = parse_source_string(text)
    return SourceSpec(name=name or source_name(text), path=path, hf=hf, split=split, format=format)


def ingest_sources(
    sources: list[str | SourceSpec],
    out: str | Path,
    format: str | None = None,
    name: str | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    progress: bool = False,
    workers: int = 1,
) -> IngestSummary:
    """Ingest each source into a store folder: `out` itself for one source, `out/<name>/` for several.

    Also writes manifest.json in each folder (source, format, shards with rows and sha256).
    """
    out = Path(out)
    if format is not None:
        _adapter(format)  # an unknown --format fails before anything is read
    if name is not None and len(sources) > 1:
        raise IngestError("--name names a single source; give one source, or drop --name to use the file stems")
    specs = [s if isinstance(s, SourceSpec) else spec_from_string(s, format=format, name=name) for s in sources]
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


def _ingest_with_progress(spec: SourceSpec, folder: Path, rows_per_shard: int, workers: int) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeRemainingColumn

    with Bar(TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TextColumn("{task.fields[rows]}"),
             TimeRemainingColumn(), transient=False) as bar:
        task = bar.add_task(spec.name, total=None, rows="")

        def update(p: Progress, rows: int) -> None:
            bar.update(task, completed=p.done, total=p.total, rows=f"{rows:,} rows")

        return ingest_source(spec, folder, rows_per_shard, workers=workers, on_progress=update)


__all__ = [
    "ACCEPTED_INPUTS",
    "INGEST_VERSION",
    "IngestError",
    "IngestSummary",
    "REJECTED_SCHEMA",
    "SeenIds",
    "convert_batches",
    "ingest_source",
    "ingest_sources",
    "read_rejected",
    "read_rows",
    "read_source",
    "source_name",
    "spec_from_string",
]
