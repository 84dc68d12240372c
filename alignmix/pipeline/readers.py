"""Readers: turn a source (a file, a folder, a Hugging Face dataset) into batches of raw records.

A raw record is one parsed JSON object (or one parquet / Arrow row as a dict) with where it came from. A line
that cannot be parsed is not an exception: it comes out as a record with `error` set, so the caller can reject
it with its file and line and go on with the rest of the file.

    >>> for batch in read_batches(locate("data/pairs.jsonl")):       # doctest: +SKIP
    ...     for rec in batch:
    ...         rec.file, rec.line, rec.value if rec.error is None else rec.error.reason
    ('pairs.jsonl', 1, {'prompt': 'Hi', 'chosen': 'Hello', 'rejected': 'Go away'})
    ('pairs.jsonl', 2, 'malformed_json')

Files are read in batches and never whole into Python objects: JSON Lines line by line, JSON arrays through
ijson's streaming parser, parquet by record batches, datasets through their memory-mapped Arrow tables.
"""

from __future__ import annotations

import codecs
import gzip
import io
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from alignmix.pipeline.schema import RowError

BATCH_SIZE = 2_000  # records per batch: large enough to amortize Arrow conversion, small next to any shard
BLOCK_BYTES = 8 << 20  # JSON Lines are read this much at a time (a batch holds at most BATCH_SIZE of its lines)
FILE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".ndjson", ".json", ".json.gz")
ACCEPTED_INPUTS = (
    "local .parquet, .jsonl, .jsonl.gz, .ndjson, .json (an array or JSON Lines), .json.gz; "
    "a folder of such files; a datasets save_to_disk folder; hf:<dataset id>[:<split>]"
)


class ReadError(Exception):
    """A source that cannot be read at all (missing, not a supported file, not valid JSON as a whole)."""


@dataclass(slots=True)
class RawRecord:
    """One record as read. `value` is the parsed object, or None when `error` says why it could not be parsed.

    `line` is the 1-based line of a JSON Lines file (None for other formats); `record` is the 1-based position
    of the record in its file, for every format.
    """

    value: Any
    file: str
    record: int
    line: int | None = None
    raw: bytes | None = None
    error: RowError | None = None
    parsed: bool = True  # False: a JSON Lines line read with parse=False, still to be parsed (in a worker)

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # a plain tuple pickles twice as fast as the slots state, and batches go to worker processes
        return (RawRecord, (self.value, self.file, self.record, self.line, self.raw, self.error, self.parsed))

    def ensure_parsed(self) -> RawRecord:
        """Parse a line read with parse=False (sets `value` or `error`); a no-op for parsed records."""
        if not self.parsed:
            assert self.raw is not None and self.line is not None
            done = _parse_line(self.raw, self.file, self.line, self.record)
            self.value, self.error, self.parsed = done.value, done.error, True
        return self

    def raw_text(self) -> str:
        """The record as text for `rejected/`: the original line when there is one, else the value as JSON."""
        if self.raw is not None:
            return self.raw.decode("utf-8", errors="replace").rstrip("\r\n")
        return orjson.dumps(self.value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


@dataclass
class Location:
    """A resolved source: local files, a save_to_disk folder, or a Hugging Face dataset id."""

    kind: str  # "files" | "disk" | "hf"
    name: str  # how errors and `file` columns name it
    files: list[Path] = field(default_factory=list)
    root: Path | None = None
    hf_id: str | None = None
    hf_config: str | None = None
    split: str | None = None

    def identity(self) -> list[Any]:
        """What the source's content depends on, for resume fingerprints: paths, sizes and mtimes of local
        files (cheap, like make), or the dataset's own fingerprint (`datasets` hashes its data files)."""
        if self.kind == "files":
            return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in self.files]
        if self.kind == "disk":
            assert self.root is not None
            return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(self.root.rglob("*"))
                    if p.is_file()] + [self.split]
        return [self.hf_id, self.hf_config, self.split, load_dataset_split(self)._fingerprint]


def _is_supported_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(FILE_SUFFIXES) and not p.name.startswith(".")


def _is_save_to_disk(p: Path) -> bool:
    return (p / "dataset_dict.json").is_file() or ((p / "state.json").is_file() and (p / "dataset_info.json").is_file())


def locate(path: str | None = None, *, hf: str | None = None, hf_config: str | None = None,
           split: str | None = None) -> Location:
    """Resolve a path or dataset id into a Location, or raise ReadError naming it and what is accepted.

    >>> locate(hf="HuggingFaceH4/ultrafeedback_binarized", split="test_prefs").kind
    'hf'
    """
    if hf is not None:
        return Location("hf", f"hf:{hf}" + (f":{split}" if split else ""), hf_id=hf, hf_config=hf_config, split=split)
    assert path is not None
    p = Path(path)
    if not p.exists():
        raise ReadError(f"{p}: no such file or folder (accepted: {ACCEPTED_INPUTS})")
    if p.is_dir():
        if _is_save_to_disk(p):
            return Location("disk", str(p), root=p, split=split)
        files = sorted(f for f in p.rglob("*") if _is_supported_file(f) and not _hidden(f, p))
        if not files:
            raise ReadError(f"{p}: the folder holds no readable files (accepted: {ACCEPTED_INPUTS})")
        return Location("files", str(p), files=files, root=p)
    if not p.name.lower().endswith(FILE_SUFFIXES):
        raise ReadError(f"{p}: unsupported file type {''.join(p.suffixes) or '(none)'} (accepted: {ACCEPTED_INPUTS})")
    return Location("files", str(p), files=[p], root=p.parent)


def _hidden(f: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in f.relative_to(root).parts)


@dataclass
class Progress:
    """Where a reader is: `done` of `total` in `unit` (bytes of files, or rows of a dataset)."""

    done: int = 0
    total: int | None = None
    unit: str = "B"


def read_batches(loc: Location, batch_size: int = BATCH_SIZE, limit: int | None = None,
                 progress: Progress | None = None, parse: bool = True) -> Iterator[list[RawRecord]]:
    """Yield lists of at most `batch_size` RawRecords, in file order; at most `limit` records in all.

    With parse=False, JSON Lines come back as unparsed lines (`parsed` False, see `RawRecord.ensure_parsed`),
    so that worker processes can parse them; other formats are always parsed.
    """
    progress = progress if progress is not None else Progress()
    if loc.kind == "files":
        progress.total, progress.unit = sum(f.stat().st_size for f in loc.files), "B"
        gen = _read_files(loc, batch_size, progress, parse)
    else:
        gen = _read_dataset(loc, batch_size, progress)
    yield from _limited(gen, limit)


def _limited(gen: Iterator[list[RawRecord]], limit: int | None) -> Iterator[list[RawRecord]]:
    if limit is None:
        yield from gen
        return
    left = limit
    for batch in gen:
        if len(batch) >= left:
            yield batch[:left]
            return
        left -= len(batch)
        yield batch


def _read_files(loc: Location, batch_size: int, progress: Progress, parse: bool) -> Iterator[list[RawRecord]]:
    base = progress.done
    for path in loc.files:
        rel = path.name if len(loc.files) == 1 or loc.root is None else str(path.relative_to(loc.root))
        reader = _reader_for(path)
        for batch, done in reader(path, rel, batch_size, parse):
            progress.done = base + done
            yield batch
        base += path.stat().st_size
        progress.done = base


def _reader_for(path: Path) -> Callable[[Path, str, int, bool], Iterator[tuple[list[RawRecord], int]]]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _read_parquet
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return _read_json_lines
    # .json / .json.gz: an array of records (streamed), or JSON Lines under a .json name (common in the wild).
    return _read_json_array_or_lines


def _open_binary(path: Path) -> tuple[io.BufferedIOBase, io.BufferedIOBase]:
    """(stream to read, raw file whose tell() measures progress in on-disk bytes)."""
    raw = open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - closed by the caller
    if path.name.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw, mode="rb"), raw  # type: ignore[return-value]
    return raw, raw


def _read_json_lines(path: Path, rel: str, batch_size: int, parse: bool = True
                     ) -> Iterator[tuple[list[RawRecord] | LineBlock, int]]:
    """JSON Lines, split on b"\\n" only (strings may hold U+2028, which str.splitlines would split on).

    Read BLOCK_BYTES at a time; runs of lines that start with `{` come out as LineBlocks (the lines' bytes in one
    object, records made only when asked for), any other line (blank: skipped; anything else: a record that
    will fail or parse on its own) in a plain list, so every record keeps its line and record number.
    """
    stream, raw = _open_binary(path)
    lines = _Lines(rel, batch_size, parse)
    with raw, stream:
        rest, first = b"", True
        try:
            while True:
                chunk = stream.read(BLOCK_BYTES)
                data = rest + chunk if rest else chunk
                if first and data.startswith(codecs.BOM_UTF8):  # written by some Windows tools; not part of the JSON
                    data = data[len(codecs.BOM_UTF8):]
                first = first and not data
                cut = data.rfind(b"\n") + 1 if chunk else len(data)
                rest = data[cut:]
                for batch in lines.split(data[:cut] if cut < len(data) else data):
                    yield batch, raw.tell()
                if not chunk:
                    break
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise ReadError(f"{path}: cannot be read after {lines.number} records: {err}") from None
        for batch in lines.flush():
            yield batch, raw.tell()


class _Lines:
    """Cuts a JSON Lines file's text, a piece at a time, into LineBlocks and lists of odd lines, in file order."""

    def __init__(self, rel: str, batch_size: int, parse: bool):
        self.rel, self.batch_size, self.parse = rel, batch_size, parse
        self.lineno = self.number = 0
        self.odd: list[RawRecord] = []

    def split(self, body: bytes) -> Iterator[list[RawRecord] | LineBlock]:
        start, ends = 0, array("q")
        first_line, first_number = self.lineno + 1, self.number + 1
        pos, size, find = 0, len(body), body.find
        while pos < size:
            end = find(b"\n", pos) + 1 or size
            self.lineno += 1
            if body[pos] == 0x7B:  # "{": a record line of the block
                if self.odd:
                    yield from self.flush()
                self.number += 1
                ends.append(end - start)
                if len(ends) == self.batch_size:
                    yield LineBlock(body[start:end], ends, self.rel, first_number, first_line, self.parse)
                    start, ends, first_line, first_number = end, array("q"), self.lineno + 1, self.number + 1
            else:
                if ends:
                    yield LineBlock(body[start:pos], ends, self.rel, first_number, first_line, self.parse)
                    ends = array("q")
                self._odd_line(body[pos:end])
                if len(self.odd) == self.batch_size:
                    yield from self.flush()
                start, first_line, first_number = end, self.lineno + 1, self.number + 1
            pos = end
        if ends:
            yield LineBlock(body[start:], ends, self.rel, first_number, first_line, self.parse)

    def _odd_line(self, line: bytes) -> None:
        if not line or line.isspace():  # = not line.strip(), without copying the line
            return  # blank lines (a trailing newline, spacing) are not records
        self.number += 1
        rec = RawRecord(None, self.rel, self.number, self.lineno, line, parsed=False)
        self.odd.append(rec.ensure_parsed() if self.parse else rec)

    def flush(self) -> Iterator[list[RawRecord]]:
        if self.odd:
            yield self.odd
            self.odd = []


class LineBlock(Sequence[RawRecord]):
    """Consecutive lines of a JSON Lines file, each starting with `{`, as one bytes object: `blob`, `ends` (each
    line's end offset in it), the file, and the record and line numbers of the first line.

    It is a sequence of RawRecords (made on first use), so every consumer of batches reads it as a list; the fast
    ingest path reads `blob` instead, all lines at once (fast_convert). Pickles as the bytes (worker processes).
    """

    __slots__ = ("_records", "blob", "ends", "file", "line", "parse", "record")

    def __init__(self, blob: bytes, ends: array, file: str, record: int, line: int, parse: bool = True):
        self.blob, self.ends, self.file, self.record, self.line, self.parse = blob, ends, file, record, line, parse
        self._records: list[RawRecord] | None = None

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (LineBlock, (self.blob, self.ends, self.file, self.record, self.line, self.parse))

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def records(self) -> list[RawRecord]:
        if self._records is None:
            self._records = [self._record(i) for i in range(len(self.ends))]
        return self._records

    def _record(self, i: int) -> RawRecord:
        start = self.ends[i - 1] if i else 0
        rec = RawRecord(None, self.file, self.record + i, self.line + i, self.blob[start:self.ends[i]], parsed=False)
        return rec.ensure_parsed() if self.parse else rec

    def __iter__(self) -> Iterator[RawRecord]:
        return iter(self.records)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice) and i.step is None and (i.start or 0) == 0 and self._records is None:
            ends = self.ends[: i.stop]  # the first lines (a source's `limit`)
            return LineBlock(self.blob[: ends[-1] if ends else 0], ends, self.file, self.record, self.line, self.parse)
        if isinstance(i, int) and self._records is None:  # one record (a rejected row's): the others stay bytes
            return self._record(i if i >= 0 else len(self.ends) + i)
        return self.records[i]


def _parse_line(line: bytes, rel: str, lineno: int, number: int) -> RawRecord:
    try:
        return RawRecord(orjson.loads(line), rel, number, lineno, line)
    except orjson.JSONDecodeError as err:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as uerr:
            error = RowError("invalid_utf8", None, f"invalid UTF-8 at byte {uerr.start} of the line")
        else:
            error = RowError("malformed_json", None, str(err))
        return RawRecord(None, rel, number, lineno, line, error)


def _read_json_array_or_lines(path: Path, rel: str, batch_size: int, parse: bool = True
                              ) -> Iterator[tuple[list[RawRecord], int]]:
    stream, raw = _open_binary(path)
    with raw, stream:
        head = stream.peek(64)[:64] if hasattr(stream, "peek") else b""
        first = head.removeprefix(codecs.BOM_UTF8).lstrip()[:1]
        if first == b"[":
            if head.startswith(codecs.BOM_UTF8):
                stream.read(len(codecs.BOM_UTF8))
            yield from _stream_json_array(path, stream, raw, rel, batch_size)
            return
    if first in (b"{", b""):
        yield from _read_json_lines(path, rel, batch_size, parse)
        return
    raise ReadError(f"{path}: a .json file must hold an array of records or one JSON object per line "
                    f"(it starts with {first!r}; accepted: {ACCEPTED_INPUTS})")


def _stream_json_array(path: Path, stream: Any, raw: Any, rel: str, batch_size: int
                       ) -> Iterator[tuple[list[RawRecord], int]]:
    """Stream the items of a top-level JSON array with ijson (C backend), one record at a time.

    A syntax error inside an array leaves the rest of the file unreadable (there is no line to skip to),
    so it stops the source with a ReadError that names the last good record.
    """
    import ijson

    batch: list[RawRecord] = []
    number = 0
    try:
        for value in ijson.items(stream, "item", use_float=True):
            number += 1
            batch.append(RawRecord(value, rel, number))
            if len(batch) == batch_size:
                yield batch, raw.tell()
                batch = []
    except (ijson.JSONError, UnicodeDecodeError, OSError, EOFError) as err:
        raise ReadError(f"{path}: not valid JSON after record {number}: {err}; "
                        f"write it as JSON Lines to keep the good records and reject the bad ones") from None
    if batch:
        yield batch, raw.tell()


def _read_parquet(path: Path, rel: str, batch_size: int, parse: bool = True) -> Iterator[tuple[list[RawRecord], int]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not a parquet file"
        raise ReadError(f"{path}: not a readable parquet file: {err}") from None
    size, rows_total = path.stat().st_size, max(pf.metadata.num_rows, 1)
    number = 0
    for rb in pf.iter_batches(batch_size=batch_size):
        batch = []
        for value in rb.to_pylist():
            number += 1
            batch.append(RawRecord(value, rel, number))
        yield batch, size * number // rows_total


def _read_dataset(loc: Location, batch_size: int, progress: Progress) -> Iterator[list[RawRecord]]:
    ds = load_dataset_split(loc)
    progress.total, progress.unit = ds.num_rows, "rows"
    number = 0
    for table in ds.with_format("arrow").iter(batch_size=batch_size):
        batch = []
        for value in table.to_pylist():
            number += 1
            batch.append(RawRecord(value, loc.name, number))
        progress.done = number
        yield batch


def load_dataset_split(loc: Location) -> Any:
    """The `datasets.Dataset` of a Hub id (or its local cache) or a save_to_disk folder, one split of it.

    A dataset with several splits needs one named: `hf:<id>:<split>` on the command line, `split:` in a recipe.
    """
    import datasets

    try:
        if loc.kind == "disk":
            ds = datasets.load_from_disk(str(loc.root))
        else:
            ds = datasets.load_dataset(loc.hf_id, name=loc.hf_config, split=loc.split)
    except Exception as err:  # datasets raises many types (FileNotFoundError, DatasetNotFoundError, ...)
        raise ReadError(f"{loc.name}: cannot be loaded with datasets: {type(err).__name__}: {err}") from None
    if isinstance(ds, datasets.DatasetDict):
        if loc.split is not None:
            if loc.split not in ds:
                raise ReadError(f"{loc.name}: no split {loc.split!r}; it has {sorted(ds)}")
            return ds[loc.split]
        if len(ds) != 1:
            raise ReadError(f"{loc.name}: has splits {sorted(ds)}; name one (hf:<id>:<split>, or `split:` in a recipe)")
        return next(iter(ds.values()))
    if isinstance(ds, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise ReadError(f"{loc.name}: streaming datasets are not supported; load it without streaming")
    return ds


def parse_source_string(text: str) -> tuple[str | None, str | None, str | None]:
    """A CLI source string as (path, hf id, split).

    >>> parse_source_string("hf:HuggingFaceH4/ultrafeedback_binarized:test_prefs")
    (None, 'HuggingFaceH4/ultrafeedback_binarized', 'test_prefs')
    >>> parse_source_string("data/pairs.jsonl")
    ('data/pairs.jsonl', None, None)
    """
    if not text.startswith("hf:"):
        return text, None, None
    rest = text[3:]
    dataset, sep, split = rest.rpartition(":")
    # "hf:/abs/folder" or "hf:org/name" have no split; a Windows-free world lets ':' mark the split.
    if not sep or "/" in split:
        return None, rest, None
    return None, dataset, split or None
