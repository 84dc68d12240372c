"""Evaluation sets as users have them: the prompts of a file, a folder, a Hugging Face dataset, or a set
bundled with alignmix (see alignmix/filters/evals/SOURCES.md), for decontamination.

    evals:
      - gsm8k                                                # bundled; `arena_hard` stands for both versions
      - {path: evals/TruthfulQA.csv, field: Question}
      - {path: evals/question.jsonl, field: turns, name: mt_bench}   # a list of turns: each is checked
      - {path: evals/HumanEval.jsonl.gz}                     # field `prompt` by default
      - {hf: openai/gsm8k, config: main, split: test, field: question}

Files: JSON Lines (.jsonl, .ndjson, gzipped or not), JSON (an array of records, or an object of equal-length
columns), CSV/TSV (with a header row), parquet; a folder of such files, or a `datasets` save_to_disk folder.
An item's field holds a string, a list of strings (turns), or a list of chat messages ({role, content}: the
user turns are taken); a null or blank field matches nothing.

    >>> read_eval_items(EvalSet(path="question.jsonl", field="turns"))[0]          # doctest: +SKIP
    ('Compose an engaging travel blog post about a recent trip to Hawaii, ...', 'Rewrite your previous response. ...')

Errors name the file, the item (numbered from 0, as matches are: `mt_bench#0`) and the field, and say what
would fix it:

    EvalSetError: field 'question' not found in evals/TruthfulQA.csv; columns are Type, Category, Question, Best
    Answer, Correct Answers, Incorrect Answers, Source: set `field: Question`
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import Field, model_validator

from alignmix.filters import evals as bundled_evals
from alignmix.pipeline.config import StrictModel

JSON_LINES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")
JSON = (".json", ".json.gz")
CSV = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
PARQUET = (".parquet",)
SUFFIXES = JSON_LINES + JSON + CSV + PARQUET
ACCEPTED = ".jsonl, .ndjson, .json, .csv, .tsv (each also .gz), .parquet, a folder of them, a save_to_disk folder"
# Names that usually hold an evaluation prompt, most likely first: offered as the fix when `field` is absent.
PROMPT_NAMES = ("prompt", "question", "instruction", "turns", "problem", "query", "input", "messages", "text")

Turns = tuple[str, ...]


class EvalSetError(ValueError):
    """An evaluation set that cannot be read as configured; the message names it and says what to change."""


class EvalSet(StrictModel):
    """Your own evaluation set: a local file or folder (`path`), or a Hugging Face dataset (`hf`)."""

    path: str | None = Field(None, description=f"a local evaluation file or folder ({ACCEPTED})")
    hf: str | None = Field(None, description="a Hugging Face dataset id (from the local cache when offline) or a "
                           "local data folder, read through `datasets.load_dataset`")
    config: str | None = Field(None, description="the dataset's configuration, for `hf` (e.g. gsm8k's `main`)")
    split: str | None = Field(None, description="the split, for `hf` or a save_to_disk folder with several")
    field: str = Field("prompt", description="the field of each item that holds its prompt: a string, a list of "
                       "strings (turns), or a list of chat messages")
    name: str | None = Field(None, description="the name recorded in matches (default: the file's or dataset's name)")

    @model_validator(mode="after")
    def _one_source(self) -> EvalSet:
        if (self.path is None) == (self.hf is None):
            raise ValueError("an evaluation set needs exactly one of `path: FILE` or `hf: DATASET_ID` "
                             "(or a bundled set's bare name, e.g. `gsm8k`)")
        return self

    @property
    def label(self) -> str:
        """The name recorded in matches.

        >>> EvalSet(path="data/HumanEval.jsonl.gz").label, EvalSet(hf="openai/gsm8k", split="test").label
        ('HumanEval', 'gsm8k')
        """
        if self.name:
            return self.name
        if self.hf is not None:
            return self.hf.rstrip("/").rsplit("/", 1)[-1]
        base = Path(self.path or "").name
        for suffix in sorted(SUFFIXES, key=len, reverse=True):
            if base.lower().endswith(suffix):
                return base[: -len(suffix)]
        return base

    @property
    def where(self) -> str:
        """How errors name the set: its path, or hf:<id>[:<split>]."""
        return self.path if self.path is not None else f"hf:{self.hf}" + (f":{self.split}" if self.split else "")


def resolve(evals: Iterable[EvalSet | str]) -> list[EvalSet]:
    """The recipe's eval entries as EvalSets: bundled names become the shipped files, groups their members.

    >>> [(s.label, s.field) for s in resolve(["mt_bench", EvalSet(path="mine.csv", field="Question")])]
    [('mt_bench', 'turns'), ('mine', 'Question')]
    """
    out: dict[str, EvalSet] = {}
    for entry in evals:
        specs = [EvalSet(path=str(b.path), field=b.field, name=b.name) for b in bundled_sets(entry)] \
            if isinstance(entry, str) else [entry]
        for spec in specs:
            if spec.label in out and out[spec.label] != spec:
                raise EvalSetError(f"two evaluation sets are named {spec.label!r} ({out[spec.label].where} and "
                                   f"{spec.where}); give one a `name:`")
            out[spec.label] = spec
    return list(out.values())


def bundled_sets(name: str) -> list[bundled_evals.BundledSet]:
    """The bundled sets a bare name selects; an unknown name is an error that lists the names there are."""
    try:
        return bundled_evals.bundled(name)
    except KeyError:
        raise EvalSetError(
            f"unknown evaluation set {name!r}: the bundled sets are {', '.join(bundled_evals.names())} "
            f"(arena_hard = both versions); for your own file write {{path: FILE, field: COLUMN}}, "
            f"for a dataset {{hf: ID, split: SPLIT, field: COLUMN}}"
        ) from None


def read_eval_items(spec: EvalSet) -> list[Turns]:
    """The prompts of one evaluation set, item by item, each as its turns (one for a single-turn set)."""
    columns, values = _read(spec)
    if spec.field not in columns:
        raise EvalSetError(f"field {spec.field!r} not found in {spec.where}; {_columns_and_fix(spec.field, columns)}")
    return [_turns(value, spec, i, where) for i, (where, value) in enumerate(values)]


def _turns(value: Any, spec: EvalSet, i: int, where: str) -> Turns:
    """An item's field as its turns: a string is one turn, null none; blank turns stay (so turns keep their
    numbers) and match nothing.

    >>> _turns(["Hi", "More"], EvalSet(path="e.jsonl"), 0, ""), _turns(None, EvalSet(path="e.jsonl"), 0, "")
    (('Hi', 'More'), ())
    """
    if isinstance(value, str):
        return (value,)
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        if all(isinstance(t, str) for t in value):
            return tuple(value)
        if all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
            return tuple(m["content"] for m in value if m.get("role", "user") == "user")
    kind = type(value).__name__ if not isinstance(value, (list, tuple)) else "a list of other things"
    at = f" ({where})" if where else ""
    raise EvalSetError(f"{spec.where} item {i}{at}: field {spec.field!r} holds {kind}, not a prompt (a string, a list "
                       f"of strings, or a list of {{role, content}} messages); set `field` to the one that holds it")


def _columns_and_fix(field: str, columns: list[str]) -> str:
    """ "columns are A, B, C: set `field: B`", offering the column most likely meant.

    >>> _columns_and_fix("question", ["Type", "Question", "Best Answer"])
    'columns are Type, Question, Best Answer: set `field: Question`'
    """
    shown = ", ".join(columns[:12]) + (f", ... ({len(columns)} in all)" if len(columns) > 12 else "")
    if not columns:
        return "it holds no items"
    folded = {c.casefold(): c for c in reversed(columns)}
    guess = folded.get(field.casefold()) or next((folded[n] for n in PROMPT_NAMES if n in folded), None)
    fix = f"set `field: {guess}`" if guess else "set `field:` to the column that holds the prompt"
    return f"columns are {shown}: {fix}"


# --- reading: (column names, (where, value of the field) per item) ------------------------------------------

Values = Iterator[tuple[str, Any]]


def _read(spec: EvalSet) -> tuple[list[str], Values]:
    if spec.hf is not None:
        return _dataset(spec)
    path = Path(spec.path or "")
    if not path.exists():
        raise FileNotFoundError(f"evaluation set {path} does not exist (a path is relative to the directory alignmix "
                                f"runs in; bundled sets need no path: {', '.join(bundled_evals.names())})")
    if path.is_dir():
        from alignmix.pipeline.readers import _is_save_to_disk

        if _is_save_to_disk(path):
            return _dataset(spec)
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.name.lower().endswith(SUFFIXES)
                       and not any(p.startswith(".") for p in f.relative_to(path).parts))
        if not files:
            raise EvalSetError(f"evaluation set {path}: the folder holds no readable files (accepted: {ACCEPTED})")
        opened = [(f, _file(f, spec.field)) for f in files]
        for f, (columns, _) in opened:
            if spec.field not in columns:
                raise EvalSetError(f"field {spec.field!r} not found in {f}; {_columns_and_fix(spec.field, columns)}")
        return opened[0][1][0], ((f"{f.name} {w}", v) for f, (_, values) in opened for w, v in values)
    return _file(path, spec.field)


def _file(path: Path, field: str) -> tuple[list[str], Values]:
    name = path.name.lower()
    if name.endswith(PARQUET):
        return _parquet(path, field)
    if not name.endswith(SUFFIXES):
        raise EvalSetError(f"evaluation set {path}: unsupported file type {''.join(path.suffixes) or '(none)'} "
                           f"(accepted: {ACCEPTED})")
    try:
        raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise EvalSetError(f"evaluation set {path}: cannot be read: {err}") from None
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark, as some Windows tools write
    if name.endswith(CSV):
        return _csv(path, raw, "\t" if ".tsv" in name else ",", field)
    if name.endswith(JSON_LINES):
        return _records(path, _json_lines(path, raw), field)
    return _json(path, raw, field)


def _json_lines(path: Path, raw: bytes) -> Values:
    # Split on b"\n" only: strings may hold U+2028, which str.splitlines would split on.
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if line.strip():
            try:
                yield f"line {lineno}", orjson.loads(line)
            except orjson.JSONDecodeError as err:
                raise EvalSetError(f"evaluation set {path} line {lineno}: not valid JSON ({err}); "
                                   "fix or remove the line") from None


def _json(path: Path, raw: bytes, field: str) -> tuple[list[str], Values]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        if raw.lstrip()[:1] == b"{":  # JSON Lines under a .json name, common in the wild
            return _records(path, _json_lines(path, raw), field)
        raise EvalSetError(f"evaluation set {path}: not valid JSON ({err})") from None
    if isinstance(data, list):
        return _records(path, ((f"item {i}", r) for i, r in enumerate(data)), field)
    if isinstance(data, dict) and len(data) == 1:
        (key, inner), = data.items()
        if isinstance(inner, list) and inner and all(isinstance(r, dict) for r in inner):  # {"data": [records]}
            return _records(path, ((f"{key} item {i}", r) for i, r in enumerate(inner)), field)
    if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) > 1:
            raise EvalSetError(f"evaluation set {path}: an object of columns needs columns of one length; "
                               f"they are {lengths}")
        # columns, as `Dataset.to_dict()` or `json.dump(frame.to_dict("list"))` write them
        return list(data), (("", v) for v in data.get(field, ()))
    raise EvalSetError(f"evaluation set {path}: a .json evaluation set holds an array of records or an object of "
                       f"equal-length columns, not {type(data).__name__}; or write it as JSON Lines")


def _records(path: Path, records: Values, field: str) -> tuple[list[str], Values]:
    """JSON records: the columns are the first record's keys; a later record without `field` is an error."""
    first = next(records, None)
    if first is None:
        return [], iter(())
    if not isinstance(first[1], dict):
        raise EvalSetError(f"evaluation set {path} {first[0]}: a record must be a JSON object, "
                           f"not {type(first[1]).__name__}")

    def values() -> Values:
        for where, rec in _chain(first, records):
            if not isinstance(rec, dict):
                raise EvalSetError(f"evaluation set {path} {where}: a record must be a JSON object, "
                                   f"not {type(rec).__name__}")
            if field not in rec:
                raise EvalSetError(f"evaluation set {path} {where}: field {field!r} is missing; "
                                   f"{_columns_and_fix(field, list(rec))}")
            yield where, rec[field]

    return list(first[1]), values()


def _chain(first: tuple[str, Any], rest: Values) -> Values:
    yield first
    yield from rest


def _csv(path: Path, raw: bytes, delimiter: str, field: str) -> tuple[list[str], Values]:
    """CSV/TSV with a header row; quoted cells may span lines (TruthfulQA's do)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise EvalSetError(f"evaluation set {path}: not UTF-8 (byte {err.start}); save it as UTF-8") from None
    # Long prompts (whole documents) pass the csv module's default cell limit of 131,072 characters.
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a C long, also on Windows
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = [h.strip() for h in next(reader, [])]
    except csv.Error as err:
        raise EvalSetError(f"evaluation set {path} line 1: not valid CSV ({err})") from None
    column = header.index(field) if field in header else None

    def values() -> Values:
        start = reader.line_num + 1
        try:
            for cells in reader:
                where, start = f"line {start}", reader.line_num + 1
                if not cells:
                    continue
                if column is not None and column >= len(cells):
                    raise EvalSetError(f"evaluation set {path} {where}: {len(cells)} cells, the header has "
                                       f"{len(header)}; quote cells that hold the delimiter {delimiter!r}")
                yield where, cells[column] if column is not None else None
        except csv.Error as err:
            raise EvalSetError(f"evaluation set {path} line {reader.line_num}: not valid CSV ({err})") from None

    return header, values()


def _parquet(path: Path, field: str) -> tuple[list[str], Values]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...: all mean "not a parquet file"
        raise EvalSetError(f"evaluation set {path}: not a readable parquet file: {err}") from None
    columns = pf.schema_arrow.names
    if field not in columns:
        return columns, iter(())
    return columns, (("", v) for v in pf.read(columns=[field]).column(field).to_pylist())


def _dataset(spec: EvalSet) -> tuple[list[str], Values]:
    """A `datasets` dataset: a Hub id (from the local cache when offline), a local data folder, or a
    save_to_disk folder (as `path:` or `hf:`)."""
    from alignmix.pipeline.readers import ReadError, _is_save_to_disk, load_dataset_split, locate

    local = Path(spec.path or spec.hf or "")
    try:
        if local.is_dir() and _is_save_to_disk(local):
            ds = load_dataset_split(locate(str(local), split=spec.split))
        else:
            ds = load_dataset_split(locate(hf=spec.hf, hf_config=spec.config, split=spec.split))
    except ReadError as err:
        import datasets

        offline = " (offline: `datasets` reads only its local cache; download it once online, or use a local " \
            "file)" if datasets.config.HF_HUB_OFFLINE else ""
        raise EvalSetError(f"evaluation set {err}{offline}") from None
    columns = list(ds.column_names)
    if spec.field not in columns:
        return columns, iter(())
    return columns, (("", v) for v in ds[spec.field])
