"""The fast path of ingest: a whole batch of well-formed records converted at once, columns built directly.

The per-row path (`adapters` + `schema`) builds one dict per row, validates it, and lets Arrow turn the list of
nested dicts into a table; that last step alone cost more than parsing the JSON. Here a batch whose every record
has the plain shape of its format is read column by column: the fields are gathered into flat Python lists
(the message roles and contents of all rows end to end, with list offsets), checked with the very rules of
`schema.validate_messages` / `preference_row`, and handed to Arrow as flat arrays. The content ids are hashed in
one tight loop over the very bytes `schema.content_id` hashes (orjson of the key, sorted, NFC and stripped
text), put together from each text's JSON string so that a text in several turns is serialized once.

A batch that holds anything else (a record that would be rejected, a field of another type, a form the fast
path does not know, such as OpenAI content parts or Alpaca `history`) returns None, and the caller converts
that batch with the per-row path, so the rows, ids, rejected records and the parquet bytes are the same either
way (tests/pipeline/test_fast_ingest.py compares both on every format and on broken files).

    >>> from alignmix.pipeline.readers import LineBlock, RawRecord
    >>> batch = [RawRecord({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, "a.jsonl", 1, 1)]
    >>> fast = convert_fast("alpaca", "sft", "demo", batch, 0)
    >>> [(m["role"], m["content"]) for m in fast.table.column("messages").to_pylist()[0]]
    [('user', 'Add 2 and 3.'), ('assistant', '5')]
    >>> fast.ids == [content_id({"messages": fast.table.column("messages").to_pylist()[0]})]
    True
    >>> convert_fast("alpaca", "sft", "demo", [RawRecord({"instruction": "no output"}, "a.jsonl", 2, 2)], 0) is None
    True

Formats with a fast path: ultrafeedback, pairs, openai, sharegpt, alpaca, prompts. The others (hh_rlhf,
llama_factory, self_instruct) always take the per-row path. A JSON Lines block (`readers.LineBlock`) of pairs or
prompts is first offered to `block_convert` (Arrow's JSON reader, columns built at once); a batch whose bytes hold
reasoning markup (REASONING_MARKERS), and any batch when a column mapping is given, takes the per-row path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from alignmix.pipeline.adapters import ADAPTERS, OPENAI_ROLES, PROMPT_FIELDS, SHAREGPT_ROLES
from alignmix.pipeline.readers import LineBlock, RawRecord
from alignmix.pipeline.schema import ROLES, SCHEMAS, RowKind, _nfc, content_id, message_struct

__all__ = ["REASONING_MARKERS", "FastBatch", "convert_fast", "has_reasoning_markup"]

_SORT = orjson.OPT_SORT_KEYS
Turns = list[tuple[str, str]]  # (role, content) of one conversation


class _Slow(Exception):
    """This batch needs the per-row path (raised inside the loops, caught once per batch)."""


@dataclass
class FastBatch:
    """What the fast path makes of a batch: one row per record, in order (rows are never dropped here)."""

    table: pa.Table
    ids: list[str]
    turns: list[int]
    response_chars: list[int]
    rejected_chars: list[int]


# Records whose raw bytes hold any of these take the per-row path, whose adapters split an assistant turn's
# reasoning from its answer (pipeline/reasoning.py) or read a reasoning_content / reasoning field: the fast paths
# do neither. Checked once per batch on its bytes (a JSON Lines block's text; other batches' records as JSON).
# The closing thought/solution markers are there because reasoning.py reads either marker alone as markup.
REASONING_MARKERS = (b"<think", b"</think", b"<|begin_of_thought", b"<|end_of_thought", b"<|begin_of_solution",
                     b"<|end_of_solution", b"<answer>", b'"reasoning')
_TAGS = tuple(m for m in REASONING_MARKERS if m.startswith(b"<"))
_FIELDS = tuple(m for m in REASONING_MARKERS if not m.startswith(b"<"))
_ESCAPED_LT = b"\\u003"  # `<` written as \u003c (Go's encoding/json does): the tags could hide behind it


def has_reasoning_markup(blob: bytes, fields: bool = True) -> bool:
    """Whether `blob` holds a REASONING_MARKERS entry (or a `<` escaped as \\u003c, which could hide one): one
    pass from `<` to `<` (rare in text, found by memchr) for the tags, one search for the escape, and with
    `fields` a search for the field names.

    >>> has_reasoning_markup(b'{"a": "x < y"}'), has_reasoning_markup(b'{"a": "<think>hm</think> 5"}')
    (False, True)
    >>> has_reasoning_markup(b'{"a": "\\u003cthink>hm"}')
    True
    """
    find, starts = blob.find, blob.startswith
    at = find(b"<")
    while at >= 0:
        if starts(_TAGS, at):
            return True
        at = find(b"<", at + 1)
    at = find(_ESCAPED_LT)
    while at >= 0:
        if blob[at + 5: at + 6] in (b"c", b"C"):
            return True
        at = find(_ESCAPED_LT, at + 1)
    return fields and any(m in blob for m in _FIELDS)


def convert_fast(adapter_name: str, kind: RowKind, source: str, batch: Sequence[RawRecord], index: int,
                 columns: object | None = None) -> FastBatch | None:
    """Convert `batch` (records `index`, `index` + 1, ... of the source) at once, or None for the per-row path.

    None whenever a record is unparsable, is not a JSON object, or would be rejected or shaped differently by
    its adapter, holds reasoning markup (REASONING_MARKERS), or a column mapping (`columns`) is given: the
    per-row path then gives every row, reason and detail exactly. A JSON Lines block (`readers.LineBlock`) of a
    format in block_convert.BLOCK_FORMATS is parsed by Arrow, column by column (block_convert).
    """
    extract = _EXTRACTORS.get(adapter_name)
    if extract is None or columns is not None or not batch:
        return None
    if isinstance(batch, LineBlock):
        # field names are checked on the parsed schema (block_convert), the tags here
        if has_reasoning_markup(batch.blob, fields=False):
            return None
        # imported here: polars and pyarrow.json only when a block comes
        from alignmix.pipeline.block_convert import convert_block

        done = convert_block(adapter_name, kind, source, batch, index)
        if done is not None:
            return done
        if has_reasoning_markup(batch.blob):
            return None
    elif has_reasoning_markup(_batch_bytes(batch)):
        return None
    consumed = ADAPTERS[adapter_name].consumed
    try:
        records = []
        for rec in batch:
            rec.ensure_parsed()
            if rec.error is not None or type(rec.value) is not dict:
                return None
            records.append(rec.value)
        if adapter_name == "pairs":
            plain = _plain_pairs(records, consumed, source, index)
            if plain is not None:
                return plain
        if kind == "preference":
            return _preference(extract, records, consumed, source, index)
        return _conversations(extract, records, consumed, kind, source, index)
    except _Slow:
        return None


def _batch_bytes(batch: Sequence[RawRecord]) -> bytes:
    """The batch's raw text: its lines when it has them, else its records as JSON."""
    if all(r.raw is not None for r in batch):
        return b"\n".join(r.raw for r in batch)  # type: ignore[misc]
    return orjson.dumps([r.value for r in batch], default=str, option=orjson.OPT_NON_STR_KEYS)


# --- checks: exactly the rules of schema.validate_messages / preference_row, as yes-or-no -----------------------


def _check(turns: Turns, ending: str) -> None:
    """Raise _Slow unless validate_messages(turns, ending=ending) would accept the conversation unchanged."""
    if not turns:
        raise _Slow
    has_user = False
    for role, content in turns:
        if role not in ROLES or type(content) is not str or not content.strip():
            raise _Slow
        has_user = has_user or role == "user"
    if turns[-1][0] != ending or not has_user:
        raise _Slow


def _meta(record: dict[str, Any], consumed: frozenset[str]) -> dict[str, Any]:
    """The fields an adapter keeps in meta (Adapter.convert's `extra`)."""
    return {k: v for k, v in record.items() if k not in consumed and v is not None}


def _meta_text(meta: dict[str, Any]) -> str:
    """schema._finish's meta text."""
    try:
        return orjson.dumps(meta, option=_SORT).decode()
    except TypeError:
        return orjson.dumps(meta, option=_SORT, default=str).decode()


def _score(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) is not int and type(value) is not float:  # bools and strings: the per-row path rejects them
        raise _Slow
    return float(value)


def _text(value: Any) -> str:
    """adapters._get(record, key) for a required string field, or _Slow."""
    if type(value) is not str:
        raise _Slow
    return value


def _optional_text(value: Any) -> str | None:
    if value is not None and type(value) is not str:
        raise _Slow
    return value


def _system(record: dict[str, Any]) -> Turns:
    system = _optional_text(record.get("system"))
    return [("system", system)] if system else []


# --- per format: a record to its conversation(s), prompt, scores and meta, as the adapter would ------------------
# Each returns (turns, meta) for conversation kinds, (prompt, chosen, rejected, score_chosen, score_rejected, meta)
# for preference rows; any record the adapter would treat otherwise raises _Slow.


def _openai(record: dict[str, Any], consumed: frozenset[str], kind: RowKind) -> tuple[Turns, dict[str, Any]]:
    messages = record.get("messages")
    if type(messages) is not list:
        raise _Slow
    turns = []
    for m in messages:
        if type(m) is not dict:
            raise _Slow
        role, content = m.get("role"), m.get("content")
        if type(role) is not str or type(content) is not str:  # content parts: the per-row path joins them
            raise _Slow
        turns.append((OPENAI_ROLES.get(role, role), content))
    return turns, _meta(record, consumed)


def _sharegpt(record: dict[str, Any], consumed: frozenset[str], kind: RowKind) -> tuple[Turns, dict[str, Any]]:
    conversations = record.get("conversations")
    if type(conversations) is not list:
        raise _Slow
    turns = []
    for t in conversations:
        if type(t) is not dict:
            raise _Slow
        speaker = t.get("from", t.get("role"))
        role = SHAREGPT_ROLES.get(speaker) if type(speaker) is str else None
        content = t.get("value", t.get("content"))
        if role is None or type(content) is not str:
            raise _Slow
        turns.append((role, content))
    return _system(record) + turns, _meta(record, consumed)


def _alpaca(record: dict[str, Any], consumed: frozenset[str], kind: RowKind) -> tuple[Turns, dict[str, Any]]:
    instruction = _text(record.get("instruction"))
    given = _optional_text(record.get("input"))
    output = record.get("output")
    if kind == "sft":
        output = _text(output)
    else:
        output = _optional_text(output)
    head = _system(record)
    history = record.get("history")
    if history is not None and (type(history) is not list or history):  # LLaMA-Factory history: per-row path
        raise _Slow
    user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
    turns = head + [("user", user)]
    if kind == "sft" or (output or "").strip():
        turns.append(("assistant", output))
    return turns, _meta(record, consumed)


def _prompts(record: dict[str, Any], consumed: frozenset[str], kind: RowKind) -> tuple[Turns, dict[str, Any]]:
    head = _system(record)
    meta = _meta(record, consumed)
    key = next((k for k in PROMPT_FIELDS if k in record), "prompt")
    meta.pop(key, None)
    if key == "instruction":
        given = _optional_text(record.get("input"))
        meta.pop("input", None)
        instruction = _text(record.get("instruction"))
        user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
    elif key == "turns":
        turns = record.get("turns")
        if type(turns) is not list or not turns or any(type(t) is not str for t in turns):
            raise _Slow
        user = turns[0]
        if len(turns) > 1:
            meta["follow_up_turns"] = turns[1:]
    else:  # prompt or question, as a string (TRL's prompt as messages: per-row path)
        user = _text(record.get(key))
    return head + [("user", user)], meta


def _ultrafeedback(record: dict[str, Any], consumed: frozenset[str]) -> tuple[Any, ...]:
    chosen, rejected = _dict_turns(record.get("chosen")), _dict_turns(record.get("rejected"))
    prompt = record.get("prompt")
    if prompt is None:  # adapters._prompt_from: the last user turn before the answer
        prompt = next((c for r, c in reversed(chosen[:-1]) if r == "user"), None)
    if type(prompt) is not str:  # TRL's prompt as messages, or no prompt at all: per-row path
        raise _Slow
    if chosen[:-1] != rejected[:-1] or not any(r == "user" for r, _ in chosen[:-1]):
        raise _Slow  # prompt_mismatch, or no user turn before the answer
    return (prompt, chosen, rejected, record.get("score_chosen"), record.get("score_rejected"),
            _meta(record, consumed))


def _dict_turns(messages: Any) -> Turns:
    if type(messages) is not list:
        raise _Slow
    turns = []
    for m in messages:
        if type(m) is not dict:
            raise _Slow
        turns.append((m.get("role"), m.get("content")))
    return turns


def _pairs(record: dict[str, Any], consumed: frozenset[str]) -> tuple[Any, ...]:
    prompt = _text(record.get("prompt"))
    chosen = _text(record.get("chosen"))
    rejected = _text(record.get("rejected"))
    head = _system(record) + [("user", prompt)]
    s_chosen, s_rejected, meta = _pairs_meta(record, consumed)
    return (prompt, head + [("assistant", chosen)], head + [("assistant", rejected)], s_chosen, s_rejected, meta)


_EXTRACTORS: dict[str, Callable[..., Any]] = {
    "openai": _openai,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompts": _prompts,
    "ultrafeedback": _ultrafeedback,
    "pairs": _pairs,
}


# --- batch builders ---------------------------------------------------------------------------------------------


class _Messages:
    """A list<struct<role, content>> column being filled: all turns end to end, and the list offsets."""

    def __init__(self) -> None:
        self.roles: list[str] = []
        self.contents: list[str] = []
        self.offsets: list[int] = [0]

    def add(self, turns: Turns) -> None:
        for role, content in turns:
            self.roles.append(role)
            self.contents.append(content)
        self.offsets.append(len(self.roles))

    def array(self) -> pa.Array:
        values = message_struct(pa.array(self.roles, pa.string()), pa.array(self.contents, pa.string()))
        return pa.ListArray.from_arrays(pa.array(self.offsets, pa.int32()), values)


_ROLE_OPEN = {role: b'["' + role.encode() + b'",' for role in ROLES}


def _turns_json(turns: Turns, memo: dict[int, bytes]) -> bytes:
    """The bytes orjson gives schema._message_key(turns): [["user","<NFC, stripped text>"],...].

    A text is serialized once per row however often it recurs (a pair's prompt is in both conversations):
    `memo` maps the text object's id to its JSON string. orjson writes a string the same wherever it stands.
    """
    parts = []
    for role, content in turns:
        text = memo.get(id(content))
        if text is None:
            text = memo[id(content)] = orjson.dumps(_nfc(content).strip())
        parts.append(_ROLE_OPEN[role] + text + b"]")
    return b"[" + b",".join(parts) + b"]"


def _conversations(extract: Callable[..., Any], records: list[dict[str, Any]], consumed: frozenset[str],
                   kind: RowKind, source: str, index: int) -> FastBatch:
    ending = "user" if kind == "prompt" else "assistant"
    messages = _Messages()
    ids, metas, turns_n, chars = [], [], [], []
    blake2b = hashlib.blake2b
    head = b'{"kind":"prompt","messages":' if kind == "prompt" else b'{"messages":'
    for record in records:
        turns, meta = extract(record, consumed, kind)
        _check(turns, ending)
        messages.add(turns)
        key = b"".join((head, _turns_json(turns, {}), b"}"))  # = orjson.dumps(content_id's key, sorted keys)
        ids.append(blake2b(key, digest_size=16).hexdigest())
        metas.append(_meta_text(meta))
        turns_n.append(len(turns))
        chars.append(len(turns[-1][1]))
    n = len(records)
    table = pa.Table.from_arrays(
        [messages.array(), pa.array(ids, pa.string()), pa.array([source] * n, pa.string()),
         pa.array([str(index + i) for i in range(n)], pa.string()), pa.array(metas, pa.string())],
        schema=SCHEMAS[kind])
    return FastBatch(table, ids, turns_n, chars, [])


def _preference(extract: Callable[..., Any], records: list[dict[str, Any]], consumed: frozenset[str],
                source: str, index: int) -> FastBatch:
    chosen_col, rejected_col = _Messages(), _Messages()
    prompts, score_c, score_r, ids, metas, turns_n, chosen_chars, rejected_chars = [], [], [], [], [], [], [], []
    blake2b = hashlib.blake2b
    for record in records:
        prompt, chosen, rejected, s_chosen, s_rejected, meta = extract(record, consumed)
        _check(chosen, "assistant")
        _check(rejected, "assistant")
        if not prompt.strip():
            raise _Slow
        score_c.append(_score(s_chosen))
        score_r.append(_score(s_rejected))
        chosen_col.add(chosen)
        rejected_col.add(rejected)
        prompts.append(prompt)
        memo: dict[int, bytes] = {}
        chosen_json = _turns_json(chosen, memo)
        prompt_json = memo.get(id(prompt)) or orjson.dumps(_nfc(prompt).strip())
        key = b"".join((b'{"chosen":', chosen_json, b',"prompt":', prompt_json, b',"rejected":',
                        _turns_json(rejected, memo), b"}"))  # = orjson.dumps(content_id's key, sorted keys)
        ids.append(blake2b(key, digest_size=16).hexdigest())
        metas.append(_meta_text(meta))
        turns_n.append(len(chosen))
        chosen_chars.append(len(chosen[-1][1]))
        rejected_chars.append(len(rejected[-1][1]))
    n = len(records)
    table = pa.Table.from_arrays(
        [pa.array(prompts, pa.string()), chosen_col.array(), rejected_col.array(),
         pa.array(score_c, pa.float64()), pa.array(score_r, pa.float64()),
         pa.array(ids, pa.string()), pa.array([source] * n, pa.string()),
         pa.array([str(index + i) for i in range(n)], pa.string()), pa.array(metas, pa.string())],
        schema=SCHEMAS["preference"])
    return FastBatch(table, ids, turns_n, chosen_chars, rejected_chars)


def _pairs_meta(record: dict[str, Any], consumed: frozenset[str]) -> tuple[Any, Any, dict[str, Any]]:
    """adapters._pairs: the two scores (top level, else under `metadata`) and the meta dict."""
    meta = _meta(record, consumed)
    metadata = record.get("metadata")
    extra = metadata
    if isinstance(extra, dict):
        extra = {k: v for k, v in extra.items() if k not in ("score_chosen", "score_rejected")}
    if extra:
        meta["metadata"] = extra
    within = metadata if isinstance(metadata, dict) else {}
    s_chosen = record["score_chosen"] if "score_chosen" in record else within.get("score_chosen")
    s_rejected = record["score_rejected"] if "score_rejected" in record else within.get("score_rejected")
    return s_chosen, s_rejected, meta


def _plain_pairs(records: list[dict[str, Any]], consumed: frozenset[str], source: str, index: int) -> FastBatch | None:
    """`pairs` records without a system prompt (the usual trl-lib form), the commonest large preference file.

    Each row is prompt, [user prompt, assistant chosen], [user prompt, assistant rejected]: the prompt is
    serialized once for the id and converted to Arrow once, the two message columns put together by Arrow
    (`take`) from the prompt, chosen and rejected columns. None when a record has a system prompt (the general
    preference builder takes the batch); _Slow when one would be rejected.
    """
    prompts, chosens, rejecteds, score_c, score_r, ids, metas = [], [], [], [], [], [], []
    blake2b, dumps = hashlib.blake2b, orjson.dumps
    for record in records:
        prompt, chosen, rejected = record.get("prompt"), record.get("chosen"), record.get("rejected")
        if type(prompt) is not str or type(chosen) is not str or type(rejected) is not str:
            raise _Slow
        system = record.get("system")
        if system is not None:
            if type(system) is not str:
                raise _Slow
            if system:
                return None
        # `not text.strip()` is `not text or text.isspace()`: the same whitespace, without a copy
        if not prompt or prompt.isspace() or not chosen or chosen.isspace() or not rejected or rejected.isspace():
            raise _Slow
        s_chosen, s_rejected, meta = _pairs_meta(record, consumed)
        score_c.append(_score(s_chosen))
        score_r.append(_score(s_rejected))
        p = dumps(_nfc(prompt).strip())
        key = b"".join((b'{"chosen":[["user",', p, b'],["assistant",', dumps(_nfc(chosen).strip()),
                        b']],"prompt":', p, b',"rejected":[["user",', p, b'],["assistant",',
                        dumps(_nfc(rejected).strip()), b"]]}"))  # = orjson.dumps(content_id's key, sorted keys)
        ids.append(blake2b(key, digest_size=16).hexdigest())
        metas.append(_meta_text(meta))
        prompts.append(prompt)
        chosens.append(chosen)
        rejecteds.append(rejected)
    n = len(records)
    prompt_col = pa.array(prompts, pa.string())
    pairs = np.empty(2 * n, dtype=np.int64)  # [p0, x0, p1, x1, ...] as positions in concat(prompts, answers)
    pairs[0::2] = np.arange(n)
    pairs[1::2] = np.arange(n, 2 * n)
    offsets = pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32))
    roles = pa.array(["user", "assistant"] * n, pa.string())

    def conversation(answers: list[str]) -> pa.Array:
        contents = pa.concat_arrays([prompt_col, pa.array(answers, pa.string())]).take(pa.array(pairs))
        return pa.ListArray.from_arrays(offsets, message_struct(roles, contents))

    table = pa.Table.from_arrays(
        [prompt_col, conversation(chosens), conversation(rejecteds),
         pa.array(score_c, pa.float64()), pa.array(score_r, pa.float64()),
         pa.array(ids, pa.string()), pa.array([source] * n, pa.string()),
         pa.array([str(index + i) for i in range(n)], pa.string()), pa.array(metas, pa.string())],
        schema=SCHEMAS["preference"])
    return FastBatch(table, ids, [2] * n, [len(c) for c in chosens], [len(r) for r in rejecteds])


# The per-row id function, for the doctest above and for readers comparing the two.
_ = content_id
