"""Column mappings: records in a shape no adapter knows (`question` / `reason` / `gen_ans`, `prompt` / `response` /
`ground_truth`, ...) read by naming which field holds what, as LLaMA-Factory's `dataset_info.json` `columns` does.

    >>> columns = ColumnMap(prompt="question", response="gen_ans", reasoning="reason", ground_truth="answer")
    >>> row = mapped_adapter(columns).convert({"question": "2 + 3?", "reason": "2 + 3 = 5.", "gen_ans": "5",
    ...                                        "answer": 5, "level": 1}, source="s", source_id="0")[0]
    >>> row["messages"][1], row["meta"]
    ({'role': 'assistant', 'content': '5', 'reasoning_content': '2 + 3 = 5.'}, '{"ground_truth":"5","level":1}')

A column is a field name, or `name[i]` for element i of a list field (Sky-T1's outputs: `code[0]`). The ground
truth goes to `meta.ground_truth` as text, where the `verify` stage reads it; multiple-choice `options` (a list)
are written under the prompt as lettered lines (`A. ...`), as MMLU-Pro prompts show them. Without `response`
the records are prompt rows. The response's own reasoning markup (`<think>`, `<|begin_of_thought|>`) is split
as in every adapter; a `reasoning` column beside a response that also holds markup is `mixed_markup`. Fields
the mapping does not name stay in meta.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import Field, field_validator, model_validator

from alignmix.pipeline.adapters import Adapter, Row, prompt_row, sft_row
from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.reasoning import split_message
from alignmix.pipeline.schema import RowError

_COLUMN = re.compile(r"^(?P<name>[^\[\]]+)(?:\[(?P<index>\d+)\])?$")
_COLUMN_HELP = "a field name, or name[i] for element i of a list field (e.g. code[0])"


class ColumnMap(StrictModel):
    """Which field of a record holds each part of a row."""

    prompt: str = Field(description="the user turn (the question, instruction or problem)")
    query: str | None = Field(None, description="text appended to the prompt after a blank line (Alpaca's input)")
    options: str | None = Field(None, description="a list of multiple-choice options, shown under the prompt as A. B. ...")
    system: str | None = Field(None, description="the system turn")
    response: str | None = Field(None, description="the assistant's answer; without it the records are prompt rows")
    reasoning: str | None = Field(None, description="the reasoning behind the response (its reasoning_content)")
    ground_truth: str | None = Field(None, description="the reference answer `verify` checks (meta.ground_truth)")

    @field_validator("*")
    @classmethod
    def _column_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _COLUMN.match(value.strip()):
            raise ValueError(f"{value!r} is not a column: give {_COLUMN_HELP}")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _reasoning_needs_response(self) -> ColumnMap:
        if self.reasoning is not None and self.response is None:
            raise ValueError("`reasoning` names a column but `response` does not: map the answer column to response")
        return self

    def fields(self) -> frozenset[str]:
        """The record fields the mapping reads (they leave meta)."""
        return frozenset(_COLUMN.match(c).group("name") for c in self.model_dump(exclude_none=True).values())  # type: ignore[union-attr]


def parse_columns(pairs: list[str] | None = None, text: str | None = None) -> ColumnMap | None:
    """A ColumnMap from the command line: a JSON/YAML-style object (`--columns '{prompt: question, ...}'`) and/or
    `key=column` pairs (`--column prompt=question`; a pair overrides the object's key). None when neither is given.
    Raises ValueError naming the bad key and the fix."""
    import yaml  # YAML flow mappings accept both '{"prompt": "q"}' and '{prompt: q}'

    data: dict[str, Any] = {}
    if text:
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ValueError(f"--columns {text!r} is not a mapping: {err} (fix: '{{prompt: question, response: "
                             "answer}}')") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"--columns {text!r} is not a mapping (fix: '{{prompt: question, response: answer}}')")
        data.update(loaded)
    for pair in pairs or []:
        key, sep, column = pair.partition("=")
        if not sep or not key.strip() or not column.strip():
            raise ValueError(f"--column {pair!r} is not key=column (fix: e.g. --column prompt=question)")
        data[key.strip()] = column.strip()
    if not data:
        return None
    from pydantic import ValidationError

    try:
        return ColumnMap.model_validate(data)
    except ValidationError as err:
        raise ValueError(column_errors(err)) from None


def column_errors(err: Any) -> str:
    """A ColumnMap ValidationError as lines naming the key and the fix."""
    keys = ", ".join(ColumnMap.model_fields)
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "columns"
        fix = {"extra_forbidden": f"the keys are {keys}", "missing": "map the prompt column: prompt=<field>",
               "string_type": _COLUMN_HELP}.get(e["type"], "see the message")
        lines.append(f"columns.{key}: {e['msg']} (fix: {fix})")
    return "\n".join(lines)


def mapped_adapter(columns: ColumnMap | Mapping[str, Any]) -> Adapter:
    """The adapter that reads records through a column mapping: SFT rows, or prompt rows without `response`."""
    if not isinstance(columns, ColumnMap):
        columns = ColumnMap.model_validate(columns)
    kind = "sft" if columns.response is not None else "prompt"
    shown = ", ".join(f"{k}={v}" for k, v in columns.model_dump(exclude_none=True).items())

    def convert(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
        return [_mapped_row(record, columns, source=source, source_id=source_id, meta=meta)]

    return Adapter("columns", kind, shown, lambda r: True, convert, columns.fields())


def _mapped_row(record: Mapping[str, Any], columns: ColumnMap, *, source: str, source_id: str,
                meta: dict[str, Any]) -> Row:
    user = _text(record, columns.prompt)
    if columns.query is not None:
        query = _text(record, columns.query, optional=True)
        user = f"{user}\n\n{query}" if query and query.strip() else user
    if columns.options is not None:
        user = f"{user}\n\n{_options(record, columns.options)}"
    messages: list[dict[str, Any]] = []
    if columns.system is not None and (system := _text(record, columns.system, optional=True)):
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user})
    if columns.ground_truth is not None and (truth := _ground_truth(record, columns.ground_truth)) is not None:
        meta["ground_truth"] = truth  # a row without one is kept: `verify` passes it through, counted
    if columns.response is None:
        return prompt_row(messages, source=source, source_id=source_id, meta=meta)
    answer: dict[str, Any] = {"role": "assistant", "content": _text(record, columns.response)}
    if columns.reasoning is not None:
        answer["reasoning_content"] = _text(record, columns.reasoning, optional=True)  # null: none given
    # split here, so a malformed trace names the column it came from
    return sft_row([*messages, split_message(answer, columns.response)], source=source, source_id=source_id, meta=meta)


def _value(record: Mapping[str, Any], column: str) -> Any:
    match = _COLUMN.match(column)
    assert match is not None  # checked by ColumnMap
    value = record.get(match.group("name"))
    if match.group("index") is not None and value is not None:
        index = int(match.group("index"))
        if not isinstance(value, list):
            raise RowError("bad_type", column, f"expected a list to take element {index} of, got {type(value).__name__}")
        value = value[index] if index < len(value) else None
    return value


def _text(record: Mapping[str, Any], column: str, *, optional: bool = False) -> Any:
    value = _value(record, column)
    if value is None:
        if optional:
            return None
        raise RowError("missing_field", column, "is missing (the column mapping names it)")
    if not isinstance(value, str):
        raise RowError("bad_type", column, f"expected a string, got {type(value).__name__}")
    return value


def _options(record: Mapping[str, Any], column: str) -> str:
    options = _value(record, column)
    if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
        raise RowError("bad_type", column, "expected a non-empty list of option strings")
    if len(options) > len(string.ascii_uppercase):
        raise RowError("bad_type", column, f"{len(options)} options: at most 26 can be lettered")
    return "\n".join(f"{letter}. {option}" for letter, option in zip(string.ascii_uppercase, options))


def _ground_truth(record: Mapping[str, Any], column: str) -> str | None:
    """The reference answer as text (a string as it is, a number as written, a list of answers as JSON), or None."""
    value = _value(record, column)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, list)):
        raise RowError("bad_type", column, f"expected a string, number or list, got {type(value).__name__}")
    if isinstance(value, list):
        return orjson.dumps(value).decode()
    return value if isinstance(value, str) else str(value)
