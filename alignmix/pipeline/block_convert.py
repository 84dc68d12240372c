"""The fast path of ingest for JSON Lines: a block of lines parsed by Arrow's JSON reader, the rows built column by
column, without a Python object per record.

A `readers.LineBlock` (thousands of lines, each a JSON object, as one bytes object) is parsed by
`pyarrow.json.read_json`, which is strict where it matters here: a malformed line, invalid UTF-8, a lone surrogate,
a repeated key or a field whose type changes between records is an error, and the block then takes the record path
(`fast_convert`, and the per-row path for any batch holding a bad record). What parses is checked against the rules
the adapter applies row by row (the text fields present and strings, non-empty once stripped; scores numbers;
the fields left for `meta` plain integers, booleans or strings), and every other case also returns None. So the
rows, ids, rejected records and parquet bytes are those of the per-row path (tests/pipeline/test_fast_ingest.py).

The ids are `schema.content_id` computed per column: texts NFC-normalized in Python only where they are not ASCII,
stripped of the characters Python's `str.strip` strips, and serialized into the very key `content_id` hashes by
polars' JSON encoder (which escapes exactly as orjson does: a test compares them on every code point); only the
blake2b of each key is a Python call.

Formats with a block path: `pairs` (prompt/chosen/rejected strings, no system prompt) and `prompts` (a `prompt` or
`question` string), the large files users meet first (trl-lib preference dumps, prompt lists to deduplicate).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from alignmix.pipeline.adapters import ADAPTERS, PROMPT_FIELDS
from alignmix.pipeline.readers import LineBlock
from alignmix.pipeline.schema import SCHEMAS, RowKind, _nfc, message_struct

__all__ = ["BLOCK_FORMATS", "convert_block"]

# What str.strip() strips: every character for which str.isspace() is true (a test checks them all); polars'
# own whitespace lacks U+001C..U+001F.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_ASCII_SPACE = np.zeros(256, dtype=bool)
_ASCII_SPACE[[ord(c) for c in PY_WHITESPACE if ord(c) < 128]] = (
    True  # a non-ASCII byte starts or ends odd text anyway
)
_NUMBERS = (pa.int64(), pa.float64(), pa.null())
_META_TYPES = (pa.int64(), pa.bool_(), pa.string(), pa.null())
_SCORES = ("score_chosen", "score_rejected")
_THREADED_HASH_BYTES = (
    4 << 20
)  # keys of a block worth hashing on two threads (long texts: pairs, conversations)
_MAX_EXACT = float(
    2**63
)  # larger numbers: orjson refuses some that Arrow reads, so the record path decides


class _Slow(Exception):
    """This block needs the record path."""


def convert_block(
    adapter_name: str, kind: RowKind, source: str, block: LineBlock, index: int
):  # -> FastBatch | None
    """Convert a block of JSON Lines (records `index`, `index` + 1, ... of the source) column by column, or None
    when its format has no block path or any line would be read differently than by its adapter row by row."""
    build = _BUILDERS.get((adapter_name, kind))
    if build is None:
        return None
    table = _parse(block)
    if table is None:
        return None
    try:
        return build(table, ADAPTERS[adapter_name].consumed, source, index)
    except _Slow:
        return None


def _parse(block: LineBlock) -> pa.Table | None:
    """The block as an Arrow table, one row per line, or None (a line Arrow refuses, or reads as other than one
    object: the line structure is checked by the row count, every line of a block starting with `{`)."""
    longest = int(np.diff(np.asarray(block.ends), prepend=0).max()) if len(block) else 0
    options = pj.ReadOptions(use_threads=True, block_size=max(1 << 20, 2 * longest))
    try:
        table = pj.read_json(pa.BufferReader(block.blob), read_options=options)
    except (
        pa.ArrowException,
        ValueError,
    ):  # ArrowInvalid, and UnicodeDecodeError for invalid UTF-8
        return None
    if table.num_rows != len(block) or _names_reasoning(table.schema):
        return None
    return table.combine_chunks()


def _names_reasoning(schema: pa.Schema) -> bool:
    """A field named reasoning* anywhere: the adapters split reasoning out of such records (fast_convert's
    REASONING_MARKERS make every other path fall back on the raw bytes)."""

    def names(t: pa.DataType) -> list[str]:
        if pa.types.is_struct(t):
            return [n for f in t for n in [f.name, *names(f.type)]]
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return names(t.value_type)
        return []

    return any(
        n.startswith("reasoning") for f in schema for n in [f.name, *names(f.type)]
    )


# --- columns ----------------------------------------------------------------------------------------------------
# Arrays are made from numpy buffers and through polars: pa.array() and Python scalars in pyarrow.compute import
# pandas (about 0.5 s) to check their input, which a short `alignmix dedup` would pay in full.


def _numbers(values: np.ndarray) -> pa.Array:
    values = np.ascontiguousarray(values)
    return pa.Array.from_buffers(
        pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)]
    )


def _strings(values: list[str]) -> pa.Array:
    return (
        pl.Series(values, dtype=pl.String)
        .to_arrow(compat_level=pl.CompatLevel.oldest())
        .cast(pa.string())
    )


def _text(table: pa.Table, name: str) -> pa.Array:
    """A required string field: present in every record, a string (else the record path: missing_field, bad_type)."""
    if name not in table.column_names:
        raise _Slow
    col = table.column(name).chunk(0)
    if col.type != pa.string() or col.null_count:
        raise _Slow
    return col


def _no_system(table: pa.Table) -> None:
    """`system` absent, null or empty everywhere (a system turn changes the conversation: record path)."""
    if "system" in table.column_names:
        col = table.column("system")
        if col.type == pa.null():
            return
        if col.type != pa.string() or (pl.Series(col).str.len_bytes().max() or 0) > 0:
            raise _Slow


def _keyed(col: pa.Array) -> pl.Series:
    """`_nfc(text).strip()` of every text (the form content_id hashes); _Slow if one is empty once stripped.

    Python touches only the texts that are not ASCII, empty, or start or end with whitespace (found by their
    first and last bytes); the others are their own key text.
    """
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32)[
        col.offset : col.offset + len(col) + 1
    ]
    data = (
        np.frombuffer(col.buffers()[2], dtype=np.uint8)
        if col.buffers()[2] is not None
        else np.zeros(1, np.uint8)
    )
    starts, ends = offsets[:-1], offsets[1:]
    empty = starts == ends
    edge = np.zeros(len(col), dtype=bool)
    some = ~empty
    edge[some] = _ASCII_SPACE[data[starts[some]]] | _ASCII_SPACE[data[ends[some] - 1]]
    odd = empty | edge | ~pl.Series(pc.string_is_ascii(col)).to_numpy()
    keyed = pl.Series(col)
    if odd.any():
        where = np.flatnonzero(odd)
        texts = col.take(_numbers(where)).to_pylist()
        keys = [_nfc(t).strip() for t in texts]
        if not all(keys):
            raise _Slow  # an empty turn (NFC never empties a text, so this is the per-row check)
        changed = [
            i for i, (t, k) in enumerate(zip(texts, keys)) if k is not t
        ]  # both return their input unchanged
        if changed:
            keyed = keyed.scatter(where[changed], [keys[i] for i in changed])
    return keyed


def _json(name: str) -> pl.Expr:
    """The JSON text of a string column, as orjson writes it (polars' encoder, the same escapes)."""
    encoded = pl.struct(pl.col(name).alias("a")).struct.json_encode()
    return encoded.str.strip_prefix('{"a":').str.strip_suffix("}")


def _ids(frame: pl.DataFrame, *pieces: str | pl.Expr) -> list[str]:
    """blake2b-128 hex digests of each row's key, `pieces` (literal JSON text and _json columns) joined:
    the bytes `content_id` hashes."""
    key = pl.concat_str([pl.lit(x) if isinstance(x, str) else x for x in pieces])
    keys = (
        frame.select(key)
        .to_series()
        .to_arrow(compat_level=pl.CompatLevel.oldest())
        .cast(pa.large_string())
    )
    bounds = np.frombuffer(keys.buffers()[1], dtype=np.int64)[
        keys.offset : keys.offset + len(keys) + 1
    ].tolist()
    data = memoryview(keys.buffers()[2])
    blake2b = hashlib.blake2b

    def digests(part: list[int]) -> list[str]:
        return [
            blake2b(data[a:b], digest_size=16).hexdigest()
            for a, b in itertools.pairwise(part)
        ]

    half = len(bounds) // 2
    if bounds[-1] < _THREADED_HASH_BYTES or half < 2:
        return digests(bounds)
    # hashlib lets go of the GIL while it hashes a key of 2 KiB or more: two threads, one half each
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(digests, [bounds[: half + 1], bounds[half:]])
    return first + second


def _meta(table: pa.Table, skip: frozenset[str]) -> pa.Array:
    """schema._finish's meta text of the fields outside `skip` (integers, booleans, strings; nulls left out)."""
    names = sorted(n for n in table.column_names if n not in skip)
    n = table.num_rows
    if not names:
        return _strings(["{}"] * n)
    if any(table.column(name).type not in _META_TYPES for name in names):
        raise _Slow  # floats, lists, objects: their JSON text is orjson's to write (record path)
    if any(table.column(name).null_count for name in names):
        rows = table.select(names).to_pylist()
        return _strings(
            [
                orjson.dumps(
                    {k: v for k, v in r.items() if v is not None},
                    option=orjson.OPT_SORT_KEYS,
                ).decode()
                for r in rows
            ]
        )
    frame = pl.from_arrow(table.select(names))
    assert isinstance(frame, pl.DataFrame)
    meta = frame.select(pl.struct(names).struct.json_encode()).to_series()
    return meta.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(pa.string())


def _score(table: pa.Table, name: str) -> pa.Array:
    """adapters._pairs' score: a top-level number in every record, else `metadata.<name>`, else null."""
    n = table.num_rows
    if name in table.column_names:
        col = table.column(name).chunk(0)
        if (
            col.null_count or col.type not in _NUMBERS
        ):  # a null beside a metadata score: the record path
            raise _Slow
    elif "metadata" in table.column_names and pa.types.is_struct(
        table.column("metadata").type
    ):
        meta = table.column("metadata").chunk(0)
        col = (
            pc.struct_field(meta, name)
            if meta.type.get_field_index(name) >= 0
            else pa.nulls(n, pa.float64())
        )
        if col.type not in _NUMBERS:
            raise _Slow
    else:
        return pa.nulls(n, pa.float64())
    col = col.cast(pa.float64())
    if not (np.abs(pl.Series(col).drop_nulls().to_numpy()) < _MAX_EXACT).all():
        raise _Slow  # NaN, Infinity or a huge number
    return col


def _metadata_only_scores(table: pa.Table) -> None:
    """`metadata`, where present, holds nothing but the scores (anything else goes to meta: record path)."""
    if "metadata" in table.column_names:
        t = table.column("metadata").type
        if t != pa.null() and not (
            pa.types.is_struct(t) and all(f.name in _SCORES for f in t)
        ):
            raise _Slow


def _lineage(n: int, source: str, index: int) -> list[pa.Array]:
    return [
        _strings([source] * n),
        pc.cast(_numbers(np.arange(index, index + n, dtype=np.int64)), pa.string()),
    ]


def _conversation(n: int, parts: list[pa.Array], roles: list[str]) -> pa.Array:
    """list<MESSAGE> of n conversations, turn j of row i being parts[j][i] with role roles[j]."""
    turns = len(parts)
    order = (
        np.arange(n * turns, dtype=np.int64).reshape(turns, n).T.ravel()
    )  # row-major: row 0's turns first
    contents = pa.concat_arrays(parts).take(_numbers(order)) if turns > 1 else parts[0]
    offsets = _numbers(np.arange(0, n * turns + 1, turns, dtype=np.int32))
    return pa.ListArray.from_arrays(
        offsets, message_struct(_strings(roles * n), contents)
    )


# --- formats ----------------------------------------------------------------------------------------------------


def _pairs(
    table: pa.Table, consumed: frozenset[str], source: str, index: int
):  # -> FastBatch
    from alignmix.pipeline.fast_convert import FastBatch

    prompt, chosen, rejected = (
        _text(table, name) for name in ("prompt", "chosen", "rejected")
    )
    _no_system(table)
    _metadata_only_scores(table)
    scores = [_score(table, name) for name in _SCORES]
    frame = pl.DataFrame(
        [
            _keyed(prompt).alias("p"),
            _keyed(chosen).alias("c"),
            _keyed(rejected).alias("r"),
        ]
    )
    frame = frame.select(
        _json("p").alias("p"), _json("c").alias("c"), _json("r").alias("r")
    )  # the prompt once
    p, c, r = pl.col("p"), pl.col("c"), pl.col("r")
    ids = _ids(
        frame,
        '{"chosen":[["user",',
        p,
        '],["assistant",',
        c,
        ']],"prompt":',
        p,
        ',"rejected":[["user",',
        p,
        '],["assistant",',
        r,
        "]]}",
    )
    n = table.num_rows
    columns = [
        prompt,
        _conversation(n, [prompt, chosen], ["user", "assistant"]),
        _conversation(n, [prompt, rejected], ["user", "assistant"]),
        *scores,
        _strings(ids),
        *_lineage(n, source, index),
        _meta(table, consumed),
    ]
    out = pa.Table.from_arrays(columns, schema=SCHEMAS["preference"])
    return FastBatch(
        out,
        ids,
        [2] * n,
        pc.utf8_length(chosen).to_pylist(),
        pc.utf8_length(rejected).to_pylist(),
    )


def _prompts(
    table: pa.Table, consumed: frozenset[str], source: str, index: int
):  # -> FastBatch
    from alignmix.pipeline.fast_convert import FastBatch

    present = [k for k in PROMPT_FIELDS if k in table.column_names]
    if len(present) != 1 or present[0] not in ("prompt", "question"):
        raise _Slow  # several prompt fields (each record takes its first), instruction + input, turns: record path
    text = _text(table, present[0])
    _no_system(table)
    frame = pl.DataFrame([_keyed(text).alias("p")])
    ids = _ids(frame, '{"kind":"prompt","messages":[["user",', _json("p"), "]]}")
    n = table.num_rows
    columns = [
        _conversation(n, [text], ["user"]),
        _strings(ids),
        *_lineage(n, source, index),
        _meta(table, consumed | {present[0]}),
    ]
    out = pa.Table.from_arrays(columns, schema=SCHEMAS["prompt"])
    return FastBatch(out, ids, [1] * n, pc.utf8_length(text).to_pylist(), [])


_BUILDERS: dict[tuple[str, str], Callable[..., object]] = {
    ("pairs", "preference"): _pairs,
    ("prompts", "prompt"): _prompts,
}
BLOCK_FORMATS = sorted({name for name, _ in _BUILDERS})
