"""Conversion of a source's raw records into rows, batch by batch, in order, in one or several processes.

    run = SourceRun("uf")
    for converted in convert_batches(SourceSpec(name="uf", path="eval_clean.jsonl"), run):   # doctest: +SKIP
        converted.table, converted.rejected          # the kept rows (Arrow), the rejected records (dicts)
    run.adapter.name, run.kind, run.rows_in, run.rows_kept, run.dropped

Before the first batch, the source's format and row kind are judged from its first parsable records (or taken
from the spec): the format by which adapter their fields match, the kind (for conversation formats, which read
both SFT and prompt rows) by which kind more of them convert to. A second row with the content of an earlier
one is rejected as `duplicate_content` (see `seen_ids`), so no id appears twice in a source.
"""

from __future__ import annotations

import functools
import multiprocessing
import pickle
from array import array
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from alignmix.pipeline.adapters import ADAPTERS, Adapter, UnknownFormat, formats_help, get_adapter
from alignmix.pipeline.columns import mapped_adapter
from alignmix.pipeline.fast_convert import convert_fast
from alignmix.pipeline.readers import (BATCH_SIZE, LineBlock, Location, Progress, RawRecord, ReadError, locate,
                                       read_batches)
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.rejected import rejected_record, rows_to_table
from alignmix.pipeline.schema import SCHEMAS, RowError, RowKind
from alignmix.pipeline.seen_ids import SeenIds

DETECT_SAMPLE = 100  # records looked at to detect the format: a few broken ones among them do not mislead it


class IngestError(Exception):
    """A source that cannot be ingested at all: unreadable, or in no recognised format. Names the file."""


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
    kind: RowKind | None = None
    rows_in: int = 0
    rows_kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    turns: array = field(default_factory=lambda: array("I"))
    response_chars: array = field(default_factory=lambda: array("I"))  # the prompt's, for prompt rows
    rejected_chars: array = field(default_factory=lambda: array("I"))


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
                          f"{formats_help()}\nor name the fields: --column prompt=<field> --column response=<field> "
                          "(also reasoning, ground_truth, system, query, options; `columns:` in a recipe source)")
    order = list(ADAPTERS)
    best = max(votes.items(), key=lambda kv: (kv[1], -order.index(kv[0])))
    return ADAPTERS[best[0]]


def detect_kind(adapter: Adapter, records: list[RawRecord], loc: Location, kind: str | None = None) -> RowKind:
    """The row kind of a source read with `adapter`: `kind` when the spec gives one, the adapter's own when it
    reads one kind; for conversation formats (SFT or prompt rows), `prompt` when more of the first parsable
    records convert to prompt rows than to SFT rows (a tie, or no record, keeps `sft`, as before prompt rows).

    A ShareGPT file of first user turns is a prompt source; a ShareGPT dump whose few last turns are the user's
    stays an SFT source, those records rejected as `not_ending_with_assistant`.
    """
    if kind is not None:
        if kind not in adapter.kinds:
            raise IngestError(f"{loc.name}: kind {kind!r} does not apply to format {adapter.name!r}, which gives "
                              f"{' or '.join(adapter.kinds)} rows; drop `kind` or choose one of those")
        return kind  # type: ignore[return-value]
    if len(adapter.kinds) == 1:
        return adapter.kind
    votes: Counter[str] = Counter()
    for value in [r.value for r in records if r.error is None][:DETECT_SAMPLE]:
        for k in adapter.kinds:
            try:
                adapter.convert(value, source="", source_id="0", kind=k)
            except RowError:
                continue
            votes[k] += 1
    return "prompt" if votes["prompt"] > votes[adapter.kind] else adapter.kind


def convert_batches(spec: SourceSpec, run: SourceRun, progress: Progress | None = None,
                    batch_size: int = BATCH_SIZE, workers: int = 1, fast: bool = True) -> Iterator[Converted]:
    """Read `spec` and convert it batch by batch, filling `run` (format, kind, counts, measurements).

    With workers > 1, batches are parsed and converted in that many processes while this one reads, drops
    duplicates and hands on the results in order: the output is the same as with one worker.
    Batches whose records all have their format's plain shape are converted at once (`fast_convert`); the
    others, and every batch when `fast` is False or the spec maps its columns, record by record: the output is
    the same either way.
    Raises IngestError when the source cannot be read or its format not recognised.
    """
    loc = locate_source(spec)
    batches = read_batches(loc, batch_size=batch_size, limit=spec.limit, progress=progress, parse=workers <= 1)
    try:
        forced = adapter_named(spec.format) if spec.format is not None else None
        columns = spec.columns.model_dump(exclude_none=True) if spec.columns is not None else None
        if columns is not None:
            forced, fast = mapped_adapter(columns), False
        head: list[list[RawRecord]] = []
        if forced is None or (spec.kind is None and len(forced.kinds) > 1):
            seen_good = 0
            for batch in batches:  # buffer batches until enough parsable records to judge the format and kind
                head.append(batch)
                seen_good += sum(r.ensure_parsed().error is None for r in batch)
                if seen_good >= DETECT_SAMPLE:
                    break
        sample = [r for b in head for r in b]
        if forced is None:
            if not head:
                raise IngestError(f"{loc.name}: holds no records; give --format to ingest an empty source")
            run.adapter = detect_adapter(sample, loc)
        else:
            run.adapter = forced
        run.kind = detect_kind(run.adapter, sample, loc, spec.kind)
        seen = SeenIds()
        jobs = _numbered(_chain(head, batches))
        convert = functools.partial(_convert_batch, run.adapter.name, run.kind, run.name, fast=fast, columns=columns)
        for batch, part in _map_in_order(convert, jobs, workers):
            yield _keep_first_copies(batch, part, run, seen)
    except ReadError as err:
        raise IngestError(str(err)) from None


def adapter_named(name: str) -> Adapter:
    try:
        return get_adapter(name)
    except UnknownFormat as err:
        raise IngestError(str(err)) from None


def locate_source(spec: SourceSpec) -> Location:
    try:
        return locate(spec.path, hf=spec.hf, hf_config=spec.hf_config, split=spec.split)
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
        pending: deque[tuple[list[RawRecord], Future[bytes]]] = deque()
        for batch, index in jobs:
            pending.append((batch, pool.submit(_in_worker, fn, _pack(batch), index)))
            if len(pending) >= 2 * workers:
                done_batch, future = pending.popleft()
                yield done_batch, pickle.loads(future.result())
        while pending:
            done_batch, future = pending.popleft()
            yield done_batch, pickle.loads(future.result())


def _pack(batch: list[RawRecord]) -> tuple[Any, ...]:
    """A batch as sent to a worker process: unparsed JSON Lines of one file as one bytes object (with the line
    ends, record and line numbers), which pickles in one copy instead of 2,000 objects; other batches as they are.
    """
    if isinstance(batch, LineBlock):  # already one bytes object; it pickles as that
        return ("records", batch)
    first = batch[0] if batch else None
    if first is None or any(r.parsed or r.file != first.file for r in batch):
        return ("records", batch)
    ends = array("q")
    total = 0
    for r in batch:
        assert r.raw is not None
        total += len(r.raw)
        ends.append(total)
    numbers = array("q", [r.record for r in batch])
    lines = array("q", [r.line or 0 for r in batch])
    return ("lines", first.file, numbers.tobytes(), lines.tobytes(), ends.tobytes(), b"".join(r.raw for r in batch))


def _unpack(packed: tuple[Any, ...]) -> list[RawRecord]:
    if packed[0] == "records":
        return packed[1]
    _, file, numbers, lines, ends, blob = packed
    starts = 0
    batch = []
    for number, line, end in zip(array("q", numbers), array("q", lines), array("q", ends)):
        batch.append(RawRecord(None, file, number, line, blob[starts:end], parsed=False))
        starts = end
    return batch


def _in_worker(fn: Callable[[list[RawRecord], int], _Part], packed: tuple[Any, ...], index: int) -> bytes:
    """Runs in a worker process: the converted batch, pickled with protocol 5 (Arrow buffers in one copy)."""
    return pickle.dumps(fn(_unpack(packed), index), protocol=5)


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


def _convert_batch(adapter_name: str, kind: RowKind, source: str, batch: list[RawRecord], index: int,
                   fast: bool = True, columns: dict[str, str] | None = None) -> _Part:
    """Parse (when still needed) and convert one batch: at once when every record has its format's plain shape
    (see fast_convert), else record by record; through the column mapping when one is given. Module-level, so a
    worker process can run it."""
    done = convert_fast(adapter_name, kind, source, batch, index) if fast and columns is None else None
    if done is not None:
        n = done.table.num_rows
        return _Part(table=done.table, ids=done.ids, source_ids=[str(index + i) for i in range(n)],
                     owners=list(range(n)), rejected=[], turns=done.turns, response_chars=done.response_chars,
                     rejected_chars=done.rejected_chars)
    adapter = mapped_adapter(columns) if columns is not None else ADAPTERS[adapter_name]
    rows: list[dict[str, Any]] = []
    owners: list[int] = []
    rejected: list[tuple[int, dict[str, Any]]] = []
    for offset, rec in enumerate(batch):
        rec.ensure_parsed()
        source_id = str(index + offset)  # the record's 0-based position in the source
        if rec.error is not None:
            rejected.append((offset, rejected_record(rec, source, rec.error, source_id=source_id)))
            continue
        try:
            new = adapter.convert(rec.value, source=source, source_id=source_id, kind=kind)
        except RowError as err:
            rejected.append((offset, rejected_record(rec, source, err, source_id=source_id)))
            continue
        rows.extend(new)
        owners.extend([offset] * len(new))
    conv = "chosen" if kind == "preference" else "messages"
    return _Part(
        table=rows_to_table(rows, SCHEMAS[kind]),
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
            rejected.append((part.owners[i], rejected_record(batch[part.owners[i]], run.name, err,
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
