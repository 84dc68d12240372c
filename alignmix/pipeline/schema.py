"""Row schemas: SFT, prompt and preference rows, as Arrow schemas, with validation and stable content ids.

The conventions are the ones `datasets`, TRL and the Hub already use:

    SFT row:        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    prompt row:     {"messages": [{"role": "user", "content": "Hi"}]}          (no answer yet: ends with a user turn)
    preference row: {"prompt": "Hi",
                     "chosen":   [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                     "rejected": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "go away"}],
                     "score_chosen": 8.0, "score_rejected": 2.0}

Every row also carries `id` (a hash of its normalized content), `source`, `source_id` and `meta` (JSON text).

An assistant turn may carry its reasoning apart from its answer, as Qwen3's chat template and vLLM do:
`{"role": "assistant", "content": "5", "reasoning_content": "2 + 3 = 5"}` (see `reasoning`). The field is in every
message struct (null where a turn has none); a message dict holds the key only when it has reasoning.

Prompt rows have the very schema of SFT rows (so `datasets` and TRL read them as a prompt-only `messages`
dataset); what tells them apart is the final role of each conversation, see `row_kind`.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any, Literal

import orjson
import polars as pl
import pyarrow as pa

RowKind = Literal["sft", "prompt", "preference"]
ROLES = ("system", "user", "assistant")

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())])
# Files written before messages carried reasoning: still read (check_frame), and cast to MESSAGE on write.
MESSAGE_V1 = pa.struct([("role", pa.string()), ("content", pa.string())])
MESSAGES = pa.list_(MESSAGE)

_LINEAGE = [("id", pa.string()), ("source", pa.string()), ("source_id", pa.string()), ("meta", pa.string())]

SFT_SCHEMA = pa.schema([("messages", MESSAGES), *_LINEAGE])
PREFERENCE_SCHEMA = pa.schema(
    [
        ("prompt", pa.string()),
        ("chosen", MESSAGES),
        ("rejected", MESSAGES),
        ("score_chosen", pa.float64()),
        ("score_rejected", pa.float64()),
        *_LINEAGE,
    ]
)
PROMPT_SCHEMA = SFT_SCHEMA  # the same columns: a prompt row is a conversation that awaits its answer
SCHEMAS: dict[str, pa.Schema] = {"sft": SFT_SCHEMA, "prompt": PROMPT_SCHEMA, "preference": PREFERENCE_SCHEMA}

# The columns a stage adds to every rejected row.
DROP_COLUMNS = ("drop_stage", "drop_reason", "drop_detail")

_PL_MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String, "reasoning_content": pl.String}))
_PL_MESSAGES_V1 = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
POLARS_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "sft": {"messages": _PL_MESSAGES, "id": pl.String, "source": pl.String, "source_id": pl.String, "meta": pl.String},
    "prompt": {"messages": _PL_MESSAGES, "id": pl.String, "source": pl.String, "source_id": pl.String, "meta": pl.String},
    "preference": {
        "prompt": pl.String,
        "chosen": _PL_MESSAGES,
        "rejected": _PL_MESSAGES,
        "score_chosen": pl.Float64,
        "score_rejected": pl.Float64,
        "id": pl.String,
        "source": pl.String,
        "source_id": pl.String,
        "meta": pl.String,
    },
}


class RowError(ValueError):
    """A row that cannot become a valid row: `reason` is a short stable code, `field` the offending field."""

    def __init__(self, reason: str, field: str | None, message: str):
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def detail(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def __reduce__(self) -> tuple[type, tuple[str, str | None, str]]:
        # pickled across processes (parallel ingest, Dask) with all three fields, not just the message
        return (RowError, (self.reason, self.field, self.message))


def row_kind(columns: list[str] | pl.DataFrame) -> RowKind:
    """Which row kind a frame holds: `preference` if it has chosen/rejected; for `messages` frames, `prompt` when
    every conversation ends with a user turn (and there is at least one), else `sft`.

    SFT and prompt rows share their columns, so the rule reads the final roles: an empty frame, or one given as a
    column list, is `sft`; a frame mixing answered and unanswered conversations is `sft` too (and fails as SFT
    wherever a stage or the mix checks its rows: see `prompt_rows_in`).

    >>> row_kind(to_frame([prompt_row([{"role": "user", "content": "Hi"}], source="s", source_id="0")], "prompt"))
    'prompt'
    """
    cols = set(columns.columns if isinstance(columns, pl.DataFrame) else columns)
    if {"chosen", "rejected"} <= cols:
        return "preference"
    if "messages" in cols:
        if isinstance(columns, pl.DataFrame) and columns.height and prompt_rows_in(columns) == columns.height:
            return "prompt"
        return "sft"
    raise ValueError(f"columns {sorted(cols)} are neither SFT or prompt rows (messages) nor preference rows "
                     "(chosen/rejected)")


def prompt_rows_in(frame: pl.DataFrame) -> int:
    """How many conversations of a `messages` frame end with a user turn (prompt rows)."""
    last_role = pl.col("messages").list.last().struct.field("role")
    return int(frame.select((last_role == "user").fill_null(False).sum()).item())


def normalize_text(text: str) -> str:
    """The normalization used for ids and exact matching: NFKC, case-folded, whitespace collapsed.

    >>> normalize_text("  Hello\\u00a0  WORLD\\n")
    'hello world'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _nfc(text: str) -> str:
    # ASCII text is already NFC, and str.isascii() is O(1): most rows skip the normalizer.
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _message_key(messages: list[dict[str, Any]]) -> list[list[str]]:
    # A turn without reasoning hashes as it always has; one with reasoning adds it as a third element.
    return [[m["role"], _nfc(m["content"]).strip()] if m.get("reasoning_content") is None
            else [m["role"], _nfc(m["content"]).strip(), _nfc(m["reasoning_content"]).strip()] for m in messages]


def content_id(row: dict[str, Any], kind: RowKind | None = None) -> str:
    """A stable id: blake2b-128 of the row's content (messages, or prompt/chosen/rejected), NFC and stripped.

    An assistant turn's reasoning is part of it when present (a row without reasoning keeps the id it had before
    messages carried reasoning). Lineage (`source`, `source_id`, `meta`) and scores are not part of it, so the same conversation has the same
    id in every run and in every source that carries it. Prompt rows (`kind="prompt"`) also hash their kind, so a
    prompt row never shares its id with a hash of the same turns made elsewhere (a response's `prompt_id`, a
    rejected generation); SFT and preference ids are unchanged by it.
    """
    if kind == "prompt":
        key: Any = {"kind": "prompt", "messages": _message_key(row["messages"])}
    elif "chosen" in row:
        key = {
            "prompt": _nfc(row["prompt"] or "").strip(),
            "chosen": _message_key(row["chosen"]),
            "rejected": _message_key(row["rejected"]),
        }
    else:
        key = {"messages": _message_key(row["messages"])}
    return hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def validate_messages(messages: Any, field: str = "messages", ending: str = "assistant") -> list[dict[str, str]]:
    """Check a conversation; return it as plain dicts or raise RowError with a stable reason code.

    `ending` is the role the last turn must have: assistant (SFT and preference conversations) or user (prompts).
    Reasons: `missing_field`, `bad_type`, `bad_role`, `empty_turn`, `not_ending_with_assistant`,
    `not_ending_with_user`, `misplaced_reasoning` (a `reasoning_content` on a turn that is not the assistant's).
    An assistant turn's `reasoning_content` (a string, possibly empty: a thinking turn that thought nothing) is
    kept; an answer may not be empty even when there is reasoning.
    """
    if messages is None:
        raise RowError("missing_field", field, "is missing")
    if not isinstance(messages, list):
        raise RowError("bad_type", field, f"expected a list of messages, got {type(messages).__name__}")
    if not messages:
        raise RowError("empty_turn", field, "the conversation has no turns")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RowError("bad_type", f"{field}[{i}]", f"expected {{role, content}}, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise RowError("bad_role", f"{field}[{i}].role", f"{role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise RowError("bad_type", f"{field}[{i}].content", f"expected a string, got {type(content).__name__}")
        if not content.strip():
            raise RowError("empty_turn", f"{field}[{i}].content", f"the {role} turn is empty")
        message = {"role": role, "content": content}
        if (reasoning := m.get("reasoning_content")) is not None:
            _add_reasoning(message, reasoning, f"{field}[{i}]")
        out.append(message)
    if out[-1]["role"] != ending:
        raise RowError(f"not_ending_with_{ending}", field, f"the last turn is {out[-1]['role']!r}, not {ending!r}")
    if not any(m["role"] == "user" for m in out):
        raise RowError("bad_role", field, "the conversation has no user turn")
    return out


def _add_reasoning(message: dict[str, str], reasoning: Any, field: str) -> None:
    if not isinstance(reasoning, str):
        raise RowError("bad_type", f"{field}.reasoning_content", f"expected a string, got {type(reasoning).__name__}")
    if message["role"] != "assistant":
        raise RowError("misplaced_reasoning", f"{field}.reasoning_content",
                       f"only assistant turns carry reasoning, not the {message['role']} turn")
    message["reasoning_content"] = reasoning


def message_struct(roles: pa.Array, contents: pa.Array, reasoning: pa.Array | None = None) -> pa.StructArray:
    """The MESSAGE struct array of flat role / content (/ reasoning) arrays; reasoning null when not given."""
    if reasoning is None:
        reasoning = pa.nulls(len(roles), pa.string())
    return pa.StructArray.from_arrays([roles, contents, reasoning], fields=list(MESSAGE))


def _score(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError("bad_type", field, f"expected a number or null, got {value!r}")
    return float(value)


def sft_row(messages: Any, *, source: str, source_id: str, meta: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """Build a validated SFT row with its id. Raises RowError."""
    row = {"messages": validate_messages(messages)}
    return _finish(row, source, source_id, meta)


def prompt_row(messages: Any, *, source: str, source_id: str, meta: dict[str, Any] | str | None = None) -> dict[str, Any]:
    """Build a validated prompt row (a conversation ending with the user turn to answer) with its id.

    Raises RowError: the SFT reasons, with `not_ending_with_user` where SFT has `not_ending_with_assistant`.

    >>> row = prompt_row([{"role": "user", "content": "Name three rivers."}], source="s", source_id="0")
    >>> row["messages"], row["id"] == content_id(row, "prompt") != content_id(row)
    ([{'role': 'user', 'content': 'Name three rivers.'}], True)
    """
    row = {"messages": validate_messages(messages, ending="user")}
    return _finish(row, source, source_id, meta, "prompt")


def preference_row(
    prompt: Any,
    chosen: Any,
    rejected: Any,
    *,
    score_chosen: Any = None,
    score_rejected: Any = None,
    source: str,
    source_id: str,
    meta: dict[str, Any] | str | None = None,
) -> dict[str, Any]:
    """Build a validated preference row with its id. Raises RowError.

    `prompt` must equal the last user turn of `chosen` (and of `rejected`), as in ultrafeedback_binarized.
    """
    chosen_msgs = validate_messages(chosen, "chosen")
    rejected_msgs = validate_messages(rejected, "rejected")
    if not isinstance(prompt, str):
        raise RowError("missing_field" if prompt is None else "bad_type", "prompt", "expected a string")
    if not prompt.strip():
        raise RowError("empty_turn", "prompt", "the prompt is empty")
    row = {
        "prompt": prompt,
        "chosen": chosen_msgs,
        "rejected": rejected_msgs,
        "score_chosen": _score(score_chosen, "score_chosen"),
        "score_rejected": _score(score_rejected, "score_rejected"),
    }
    return _finish(row, source, source_id, meta)


def _finish(row: dict[str, Any], source: str, source_id: str, meta: dict[str, Any] | str | None,
            kind: RowKind | None = None) -> dict[str, Any]:
    row["id"] = content_id(row, kind)
    row["source"] = source
    row["source_id"] = str(source_id)
    if meta is None:
        row["meta"] = "{}"
    elif isinstance(meta, str):
        row["meta"] = meta
    else:
        try:
            row["meta"] = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode()
        except TypeError:  # parquet and datasets may hold bytes, decimals, ...: kept as their text
            row["meta"] = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS, default=str).decode()
    return row


def last_user_turn(messages: list[dict[str, str]]) -> str:
    for m in reversed(messages):
        if m["role"] == "user":
            return m["content"]
    raise RowError("bad_role", "messages", "the conversation has no user turn")


def to_frame(rows: list[dict[str, Any]], kind: RowKind) -> pl.DataFrame:
    """Rows (as built by sft_row/prompt_row/preference_row) to a polars frame with the exact schema, even when empty."""
    return pl.DataFrame(rows, schema=POLARS_SCHEMAS[kind]) if rows else empty_frame(kind)


def empty_frame(kind: RowKind) -> pl.DataFrame:
    return pl.DataFrame(schema=POLARS_SCHEMAS[kind])


def to_arrow(frame: pl.DataFrame, kind: RowKind | None = None) -> pa.Table:
    """The frame as an Arrow table whose schema columns come first, cast exactly to the row schema.

    Extra columns (a stage's measurements such as `lang` or `len_ratio`) follow, unchanged.
    """
    kind = kind or row_kind(frame)
    schema = SCHEMAS[kind]
    table = frame.to_arrow()
    columns, fields = [], []
    for f in schema:
        if f.name not in table.column_names:
            raise ValueError(f"the frame has no column {f.name!r}, which {kind} rows need")
        columns.append(table.column(f.name).cast(f.type))
        fields.append(f)
    for name in table.column_names:
        if name not in schema.names:
            col = table.column(name)
            if pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            columns.append(col)
            fields.append(pa.field(name, col.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def core_columns(kind: RowKind) -> list[str]:
    return list(SCHEMAS[kind].names)


def check_frame(frame: pl.DataFrame) -> RowKind:
    """Raise ValueError naming the column when a frame does not match its row schema; return its kind."""
    kind = row_kind(frame)
    for name, dtype in POLARS_SCHEMAS[kind].items():
        if name not in frame.columns:
            raise ValueError(f"missing column {name!r} for {kind} rows")
        if frame.schema[name] == _PL_MESSAGES_V1 and dtype == _PL_MESSAGES:
            continue  # written before messages carried reasoning: cast on write (to_arrow), read as no reasoning
        if frame.schema[name] != dtype and not (dtype == pl.Float64 and frame.schema[name] == pl.Null):
            raise ValueError(f"column {name!r} has type {frame.schema[name]}, expected {dtype}")
    return kind
