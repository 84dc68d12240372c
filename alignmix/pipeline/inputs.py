"""Rows from any input: what `dedup`, `filter`, `review`, `judge` and `generate responses` read.

An input is anything `alignmix ingest` reads (a .jsonl / .jsonl.gz / .json / .parquet file, a folder of them, a
datasets save_to_disk folder, `hf:<dataset id>[:<split>]`), or rows alignmix wrote. Rows alignmix wrote (a
folder with `data/*-of-*.parquet` shards, or parquet files in the row schema) are read as they are, byte for
byte; anything else is ingested on the fly, and the command's folder keeps what ingest kept, in ingest's own
layout:

    <work>/rejected/ingest-<name>.parquet   every record that did not become a row, with its reason
    <work>/stats/ingest-<name>.json         rows in / kept / dropped per reason, the format detected

    >>> rows = read_input("hh_rlhf/test_prefs.jsonl", "deduped/")                      # doctest: +SKIP
    >>> rows.frame.height, rows.ingested["format"], rows.ingested["dropped"]           # doctest: +SKIP
    (996, 'hh_rlhf', {'bad_role': 2, 'empty_turn': 2})
    >>> read_input("deduped/").ingested is None                                         # doctest: +SKIP
    True

An input that cannot be read raises InputError, whose message is one line naming the input and what was
expected (the formats, the `--format` flag), fit to print as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from alignmix.pipeline.adapters import ADAPTERS, UnknownFormat, get_adapter
from alignmix.pipeline.ingest import IngestError, ingest_source, read_rows, read_source, spec_from_string
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.schema import check_frame
from alignmix.pipeline.store import MixStore, write_shards


class InputError(ValueError):
    """An input that cannot be read as rows. The message is one line: the input, why, and what would work."""


@dataclass
class InputRows:
    """The rows of one input. `ingested` is ingest's stats when the input was converted on the fly (and
    `folder` the folder that holds its rejected/ and stats/), None when they are rows alignmix wrote."""

    source: str
    frame: pl.DataFrame
    ingested: dict[str, Any] | None = None
    folder: Path | None = None

    def describe(self) -> str:
        """One line for a command's output.

        >>> InputRows("pairs.parquet", pl.DataFrame({"id": ["a", "b"]})).describe()
        'read pairs.parquet: 2 rows written by alignmix'
        """
        if self.ingested is None:
            return f"read {self.source}: {self.frame.height} rows written by alignmix"
        s = self.ingested
        dropped = ", ".join(f"{reason} {n}" for reason, n in s["dropped"].items()) or "none"
        line = (f"read {self.source} (format {s['format']}, {s['kind']} rows): {s['rows_in']} in, "
                f"{s['rows_kept']} kept, rejected: {dropped}")
        if s.get("resumed"):
            line += " (ingested in an earlier run)"
        return line + (f" -> {self.folder / s['rejected']}" if self.folder is not None and s["dropped"] else "")


def alignmix_row_files(path: str | Path) -> list[Path] | None:
    """The parquet files of rows alignmix wrote at `path`, or None when `path` holds something else.

    Rows alignmix wrote: the `data/*-of-*.parquet` shards of a folder it wrote, a folder of parquet files, or
    one parquet file, each in a row schema (`schema.check_frame` passes on its columns). Anything else (a
    JSONL file, a Hub export whose parquet has no `id`/`source`/`meta`) is for ingest.

        >>> alignmix_row_files("deduped/")                                           # doctest: +SKIP
        [PosixPath('deduped/data/train-00000-of-00001.parquet')]
    """
    p = Path(path)
    if p.is_file():
        files = [p] if p.name.endswith(".parquet") else []
    elif (p / "data").is_dir():
        files = MixStore(p).shard_files()
    elif p.is_dir():
        files = sorted(p.glob("*.parquet"))
    else:
        files = []
    if not files or not all(_in_row_schema(f) for f in files):
        return None
    return files


def is_store(path: str | Path) -> bool:
    """A folder alignmix wrote: `data/` shards in a row schema (what `review` and `inspect` work in)."""
    return (Path(path) / "data").is_dir() and alignmix_row_files(path) is not None


def written_by_alignmix(path: str | Path) -> bool:
    """Rows alignmix wrote (see alignmix_row_files), or a folder a generator is writing (its `batches/`)."""
    return alignmix_row_files(path) is not None or (Path(path) / "batches").is_dir()


def _in_row_schema(file: Path) -> bool:
    try:
        check_frame(pl.DataFrame(schema=pl.read_parquet_schema(file)))
    except Exception:  # not parquet at all (polars raises several types), or not rows: ingest will say which
        return False
    return True


def read_input(source: str | Path, work_dir: str | Path | None = None, *, format: str | None = None,
               name: str | None = None) -> InputRows:
    """The rows of `source`: rows alignmix wrote as they are; anything else through ingest.

    Ingested with a `work_dir`, its rejected records and stats are written there (`rejected/ingest-<name>.parquet`,
    `stats/ingest-<name>.json`); without one, the rows are only read (rejected records dropped). `format`
    forces an ingest adapter (and so always ingests); `name` is the source name rows record (default: the
    file stem).
    """
    text = str(source)
    if format is None:
        files = alignmix_row_files(text)
        if files is not None:
            frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
            check_frame(frame)
            return InputRows(text, frame)
    spec = _spec(text, format, name)
    try:
        if work_dir is None:
            return InputRows(text, read_rows(spec))
        store = MixStore(work_dir)
        frame = read_source(spec, store)
        return InputRows(text, frame, store.read_stats(f"ingest-{spec.name}"), store.root)
    except IngestError as err:
        raise InputError(one_line(err)) from None


def input_folder(source: str | Path, folder: str | Path | None = None, *, format: str | None = None,
                 name: str | None = None) -> InputRows:
    """`source` as a folder alignmix wrote (`data/` shards), for commands that work in a folder (`review`).

    A folder alignmix wrote is used as it is when `folder` is None or the same folder; otherwise the rows are
    put in `folder`: ingested there (data/, rejected/, stats/, resumable like `alignmix ingest`), or, for rows
    alignmix wrote, their shards written there unchanged.
    """
    text = str(source)
    if folder is None or Path(folder).resolve() == Path(text).resolve():
        if format is None and is_store(text):
            return InputRows(text, MixStore(text).read(), None, Path(text))
        if folder is None:
            raise InputError(f"{text}: not a folder alignmix wrote; give the folder to read it into (--out)")
    folder = Path(folder)
    if format is None and alignmix_row_files(text) is not None:
        rows = read_input(text)
        write_shards(rows.frame, MixStore(folder).data_dir)
        return InputRows(text, rows.frame, None, folder)
    spec = _spec(text, format, name)
    try:
        stats = ingest_source(spec, folder)
    except IngestError as err:
        raise InputError(one_line(err)) from None
    return InputRows(text, MixStore(folder).read(), stats, folder)


def _spec(text: str, format: str | None, name: str | None) -> SourceSpec:
    if format is not None:
        try:
            get_adapter(format)  # an unknown --format fails before anything is read, as in `alignmix ingest`
        except UnknownFormat as err:
            raise InputError(one_line(err)) from None
    spec = spec_from_string(text, format=format, name=name)
    if spec.path is not None and not Path(spec.path).exists():
        raise InputError(f"{spec.path}: does not exist (give a file, a folder, or hf:<dataset id>[:<split>])")
    return spec


_FORMATS_TAIL = re.compile(r"[\s.;]*(The formats accepted are|the formats are|Formats)\s*:\s*$")


def one_line(err: Exception) -> str:
    """An ingest error on one line: its first line, with the format list it ends with shortened to names.

    >>> one_line(IngestError("x.jsonl: the records (fields ['text']) match no format. The formats accepted are:"
    ...                      "\\n  openai  sft  messages"))[:64]
    "x.jsonl: the records (fields ['text']) match no format. Formats:"
    """
    lines = str(err).strip().splitlines() or [type(err).__name__]
    first = lines[0]
    if len(lines) > 1 or _FORMATS_TAIL.search(first):
        first = _FORMATS_TAIL.sub("", first)
        first += f". Formats: {', '.join(ADAPTERS)}"
        if "--format" not in first:
            first += "; force one with --format NAME"
        first += " (`alignmix ingest --format help` describes each)"
    return first


__all__ = ["InputError", "InputRows", "alignmix_row_files", "input_folder", "is_store", "one_line", "read_input",
           "written_by_alignmix"]
