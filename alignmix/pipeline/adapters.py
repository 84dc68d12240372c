"""Format adapters: each turns one raw record of an external format into valid rows, or raises RowError.

The format is detected from the first record's fields (or forced by name). Every adapter returns rows built by
`schema.sft_row` / `schema.prompt_row` / `schema.preference_row`, so ids, validation and reason codes are the same
for all formats:

    >>> adapter = detect_format({"instruction": "Add 2 and 3.", "input": "", "output": "5"})
    >>> adapter.name, adapter.kind
    ('alpaca', 'sft')
    >>> adapter.convert({"instruction": "Add 2 and 3.", "input": "", "output": "5"}, source="demo", source_id="0")[0]["messages"]
    [{'role': 'user', 'content': 'Add 2 and 3.'}, {'role': 'assistant', 'content': '5'}]

Reasoning: every adapter takes an assistant turn's reasoning apart from its answer (`reasoning.split_messages`),
from inline `<think>` (and R1-Zero's `<answer>`), the `<|begin_of_thought|>` / `<|begin_of_solution|>` markers, or
a separate `reasoning_content` / `reasoning` field on a message (DeepSeek's API, vLLM, OpenRouter); a malformed
trace is refused with its reason (`unclosed_reasoning`, `missing_answer`, ...):

    >>> get_adapter("openai").convert({"messages": [{"role": "user", "content": "2+3?"},
    ...     {"role": "assistant", "content": "<think>2 + 3 = 5</think> 5"}]}, source="s", source_id="0")[0]["messages"][1]
    {'role': 'assistant', 'content': '5', 'reasoning_content': '2 + 3 = 5'}

Fields an adapter does not turn into the row are kept in `meta` (e.g. UltraFeedback's `source_index`, the
Self-Instruct task `name`), so nothing the source recorded is lost.

Conversation formats (openai, sharegpt, alpaca) also read prompt-only records: converted as `kind="prompt"`, a
record with no answer (a conversation ending with its user turn, an Alpaca record without `output`) becomes a
prompt row; which kind a source holds is decided per source (see `ingest.convert.detect_kind`). The `prompts`
format reads plain prompt lists: `prompt`, `instruction` (+ `input`), `question` or MT-Bench `turns` records,
and the eval files that carry another model's answer beside the prompt (AlpacaEval), that answer kept in meta:

    >>> get_adapter("sharegpt").convert({"conversations": [{"from": "human", "value": "Hi"}]}, source="s",
    ...                                 source_id="0", kind="prompt")[0]["messages"]
    [{'role': 'user', 'content': 'Hi'}]
    >>> detect_format({"uid": "a1", "category": "coding", "prompt": "Write a zig program."}).name
    'prompts'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from alignmix.pipeline import schema
from alignmix.pipeline.reasoning import REASONING_FIELDS, split_messages
from alignmix.pipeline.schema import RowError, RowKind, last_user_turn

Row = dict[str, Any]
Convert = Callable[..., list[Row]]

# ShareGPT / LLaMA-Factory speaker names -> roles. "function_call", "observation" and tools have no place in
# the SFT / preference row schema, so they are rejected as `bad_role` rather than guessed at.
SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant", "model": "assistant",
    "bing": "assistant", "system": "system",
}
OPENAI_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Adapter:
    name: str
    kind: RowKind  # the kind of rows it gives by default
    fields: str  # the fields it reads, for error messages and `--format help`
    detect: Callable[[Mapping[str, Any]], bool]
    convert_fn: Convert
    consumed: frozenset[str]  # top-level fields that become the row; the rest go to meta
    prompts_too: bool = False  # a conversation format whose unanswered records can be read as prompt rows

    @property
    def kinds(self) -> tuple[RowKind, ...]:
        """The row kinds it can give: its own, and `prompt` for conversation formats."""
        return (self.kind, "prompt") if self.prompts_too else (self.kind,)

    def convert(self, record: Any, *, source: str, source_id: str, kind: RowKind | None = None) -> list[Row]:
        """Rows for one raw record (usually one; a Self-Instruct task gives one per instance). Raises RowError.

        `kind` (one of `kinds`; default: `kind`) is the row kind the source holds: a record of the other kind is
        refused (`not_ending_with_assistant` in an SFT source, `not_ending_with_user` in a prompt source).
        """
        if not isinstance(record, Mapping):
            raise RowError("bad_type", None, f"a record must be a JSON object, got {type(record).__name__}")
        kind = kind or self.kind
        if kind not in self.kinds:
            raise ValueError(f"format {self.name!r} gives {' or '.join(self.kinds)} rows, not {kind}")
        extra = {k: v for k, v in record.items() if k not in self.consumed and v is not None}
        if self.prompts_too:
            return self.convert_fn(record, source=source, source_id=source_id, meta=extra, kind=kind)
        return self.convert_fn(record, source=source, source_id=source_id, meta=extra)


# --- row builders: schema's, with each conversation's reasoning split out first ---------------------------------


def sft_row(messages: Any, **kw: Any) -> Row:
    return schema.sft_row(split_messages(messages), **kw)


def prompt_row(messages: Any, **kw: Any) -> Row:
    return schema.prompt_row(split_messages(messages), **kw)


def preference_row(prompt: Any, chosen: Any, rejected: Any, **kw: Any) -> Row:
    return schema.preference_row(prompt, split_messages(chosen, "chosen"), split_messages(rejected, "rejected"), **kw)


# --- field helpers ------------------------------------------------------------------------------------------


def _get(record: Mapping[str, Any], key: str, types: type | tuple[type, ...] = str, *, optional: bool = False,
         field: str | None = None) -> Any:
    value = record.get(key)
    if value is None:
        if optional:
            return None
        raise RowError("missing_field", field or key, "is missing")
    if not isinstance(value, types):
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise RowError("bad_type", field or key, f"expected {want}, got {type(value).__name__}")
    return value


def _conversation_row(messages: Any, kind: RowKind, *, source: str, source_id: str, meta: dict[str, Any]) -> Row:
    """An SFT row, or (kind `prompt`) a prompt row, from one conversation."""
    build = prompt_row if kind == "prompt" else sft_row
    return build(messages, source=source, source_id=source_id, meta=meta)


def _pair_prompt(chosen: list[dict[str, str]], rejected: list[dict[str, str]]) -> str:
    """The shared prompt of a pair: both conversations must agree on every turn before their last one."""
    if chosen[:-1] != rejected[:-1]:
        raise RowError("prompt_mismatch", "rejected", "chosen and rejected differ before their last turn")
    return last_user_turn(chosen[:-1])


def _score(record: Mapping[str, Any], key: str) -> Any:
    """A score at top level, or under `metadata` (how trl-lib style pair files carry them)."""
    if key in record:
        return record[key]
    meta = record.get("metadata")
    return meta.get(key) if isinstance(meta, Mapping) else None


# --- UltraFeedback (HuggingFaceH4/ultrafeedback_binarized; also TRL's conversational preference form) --------


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], Mapping) and "role" in value[0]


def _ultrafeedback(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    chosen = _get(record, "chosen", list)
    rejected = _get(record, "rejected", list)
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        # TRL's conversational form: the prompt turns apart, chosen/rejected holding only the replies.
        chosen, rejected, prompt = prompt + chosen, prompt + rejected, None
    prompt = prompt if prompt is not None else _prompt_from(chosen)
    row = preference_row(
        prompt, chosen, rejected,
        score_chosen=record.get("score_chosen"), score_rejected=record.get("score_rejected"),
        source=source, source_id=source_id, meta=meta,
    )
    _pair_prompt(row["chosen"], row["rejected"])
    return [row]


def _prompt_from(messages: list[Any]) -> Any:
    for m in reversed(messages[:-1]):
        if isinstance(m, Mapping) and m.get("role") == "user":
            return m.get("content")
    return None


# --- flattened prompt / chosen / rejected strings -------------------------------------------------------------


def _pairs(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    prompt = _get(record, "prompt")
    chosen = _get(record, "chosen")
    rejected = _get(record, "rejected")
    system = _get(record, "system", optional=True)
    head = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    extra = record.get("metadata")
    if isinstance(extra, Mapping):
        extra = {k: v for k, v in extra.items() if k not in ("score_chosen", "score_rejected")}
    if extra:
        meta["metadata"] = extra
    return [preference_row(
        prompt,
        head + [{"role": "assistant", "content": chosen}],
        head + [{"role": "assistant", "content": rejected}],
        score_chosen=_score(record, "score_chosen"), score_rejected=_score(record, "score_rejected"),
        source=source, source_id=source_id, meta=meta,
    )]


# --- HH-RLHF transcripts ---------------------------------------------------------------------------------------

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


def split_transcript(text: str, field: str) -> list[dict[str, str]]:
    """An Anthropic HH-RLHF transcript as messages.

    >>> split_transcript("\\n\\nHuman: Hi there\\n\\nAssistant: Hello!", "chosen")
    [{'role': 'user', 'content': 'Hi there'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    parts = _TURN.split(text)
    # parts = [before the first marker, speaker, text, speaker, text, ...]
    if len(parts) < 3 or parts[0].strip():
        raise RowError("unparseable_transcript", field, "expected turns starting with 'Human:' or 'Assistant:'")
    return [
        {"role": "user" if speaker == "Human" else "assistant", "content": content.strip()}
        for speaker, content in zip(parts[1::2], parts[2::2])
    ]


def _hh_rlhf(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    chosen_text = _get(record, "chosen")
    rejected_text = _get(record, "rejected")
    prompt_text = _get(record, "prompt", optional=True)
    if prompt_text is None:
        # The original form: chosen and rejected are whole transcripts that share every turn but the last.
        chosen = split_transcript(chosen_text, "chosen")
        rejected = split_transcript(rejected_text, "rejected")
    else:
        # The split form: a transcript ending with the human turn, and the two last assistant replies.
        turns = split_transcript(prompt_text, "prompt")
        if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
            turns = turns[:-1]  # "...\n\nAssistant:" left open for the reply
        if turns and turns[-1]["role"] != "user":
            raise RowError("bad_role", "prompt", "the transcript must end with a Human turn")
        chosen = turns + [{"role": "assistant", "content": chosen_text.strip()}]
        rejected = turns + [{"role": "assistant", "content": rejected_text.strip()}]
    row = preference_row(_prompt_from(chosen) or "", chosen, rejected, source=source, source_id=source_id, meta=meta)
    row["prompt"] = _pair_prompt(row["chosen"], row["rejected"])
    return [row]


def _looks_like_transcript(value: Any) -> bool:
    return isinstance(value, str) and (value.startswith(("Human:", "\n\nHuman:")) or "\n\nAssistant:" in value)


# --- Alpaca ---------------------------------------------------------------------------------------------------


def _alpaca(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any],
            kind: RowKind = "sft") -> list[Row]:
    instruction = _get(record, "instruction")
    given = _get(record, "input", optional=True)
    # A prompt source's records have no output (or an empty one); an SFT source's must have one.
    output = _get(record, "output", optional=kind == "prompt")
    system = _get(record, "system", optional=True)
    history = _get(record, "history", list, optional=True) or []
    messages = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(history):  # LLaMA-Factory's alpaca: [[query, response], ...] before this turn
        if not (isinstance(turn, list) and len(turn) == 2):
            raise RowError("bad_type", f"history[{i}]", "expected [query, response]")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
    messages.append({"role": "user", "content": user})
    if kind == "sft" or (output or "").strip():
        messages.append({"role": "assistant", "content": output})
    return [_conversation_row(messages, kind, source=source, source_id=source_id, meta=meta)]


# --- ShareGPT and LLaMA-Factory preference --------------------------------------------------------------------


def _sharegpt_turn(turn: Any, field: str) -> dict[str, Any]:
    if not isinstance(turn, Mapping):
        raise RowError("bad_type", field, f"expected {{from, value}}, got {type(turn).__name__}")
    speaker = turn.get("from", turn.get("role"))
    role = SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        raise RowError("bad_role", f"{field}.from", f"{speaker!r} is not one of {', '.join(sorted(SHAREGPT_ROLES))}")
    return {"role": role, "content": turn.get("value", turn.get("content")), **_reasoning_fields(turn)}


def _reasoning_fields(message: Mapping[str, Any]) -> dict[str, Any]:
    return {k: message[k] for k in REASONING_FIELDS if message.get(k) is not None}


def _sharegpt_turns(record: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    turns = [_sharegpt_turn(t, f"{key}[{i}]") for i, t in enumerate(_get(record, key, list))]
    system = _get(record, "system", optional=True)
    return ([{"role": "system", "content": system}] if system else []) + turns


def _sharegpt(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any],
              kind: RowKind = "sft") -> list[Row]:
    return [_conversation_row(_sharegpt_turns(record, "conversations"), kind, source=source, source_id=source_id,
                              meta=meta)]


def _llama_factory(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    turns = _sharegpt_turns(record, "conversations")
    chosen = turns + [_sharegpt_turn(_get(record, "chosen", dict), "chosen")]
    rejected = turns + [_sharegpt_turn(_get(record, "rejected", dict), "rejected")]
    row = preference_row(_prompt_from(chosen) or "", chosen, rejected, source=source, source_id=source_id, meta=meta)
    row["prompt"] = _pair_prompt(row["chosen"], row["rejected"])
    return [row]


# --- OpenAI messages ------------------------------------------------------------------------------------------


def _openai_content(content: Any, field: str) -> Any:
    """Plain text, or a list of text parts ({"type": "text", "text": ...}) joined; other parts are refused."""
    if not isinstance(content, list):
        return content
    texts = []
    for i, part in enumerate(content):
        if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
            raise RowError("bad_type", f"{field}[{i}]", "only text content parts are supported")
        texts.append(part["text"])
    return "".join(texts)


def _openai_messages(value: list[Any], key: str) -> list[dict[str, Any]]:
    messages = []
    for i, m in enumerate(value):
        field = f"{key}[{i}]"
        if not isinstance(m, Mapping):
            raise RowError("bad_type", field, f"expected {{role, content}}, got {type(m).__name__}")
        role = OPENAI_ROLES.get(m.get("role"), m.get("role"))  # unknown roles fail validation as bad_role
        messages.append({"role": role, "content": _openai_content(m.get("content"), f"{field}.content"),
                         **_reasoning_fields(m)})
    return messages


def _openai(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any],
            kind: RowKind = "sft") -> list[Row]:
    messages = _openai_messages(_get(record, "messages", list), "messages")
    return [_conversation_row(messages, kind, source=source, source_id=source_id, meta=meta)]


# --- plain prompt lists and eval sets -------------------------------------------------------------------------

# Where a prompt-only record keeps its prompt, in the order they are looked for.
PROMPT_FIELDS = ("prompt", "instruction", "question", "turns")
# A record with one of these carries an answer to learn from: it is SFT or preference data, not a prompt list
# (GSM8K's question + answer stays unrecognised unless `format: prompts` is forced).
ANSWER_FIELDS = ("completion", "response", "output", "answer", "chosen", "rejected", "messages", "conversations",
                 "instances", *REASONING_FIELDS)


def _is_prompt_list(record: Mapping[str, Any]) -> bool:
    if _has(record, "instruction", "output", "generator"):
        return True  # AlpacaEval: `output` is the named generator's answer to compare against, not a target
    if any(k in record for k in ANSWER_FIELDS):
        return False
    return any(isinstance(record.get(k), (str, list)) for k in PROMPT_FIELDS)


def _prompts(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    """One prompt row from the first prompt field present (the fields it used leave meta; the rest stay).

    MT-Bench's `turns` holds a question and its follow-ups, each written against the model's answer to the one
    before ("Rewrite your previous response..."): the first turn is the prompt, the follow-ups stay in meta as
    `follow_up_turns` (a conversation of user turns with no answers between them is not a valid prompt).
    """
    system = _get(record, "system", optional=True)
    head = [{"role": "system", "content": system}] if system else []
    key = next((k for k in PROMPT_FIELDS if k in record), "prompt")
    meta.pop(key, None)
    if key == "prompt" and isinstance(record.get("prompt"), list):  # TRL's conversational prompt-only form
        return [prompt_row(head + _openai_messages(record["prompt"], "prompt"), source=source, source_id=source_id,
                           meta=meta)]
    if key == "instruction":
        given = _get(record, "input", optional=True)
        meta.pop("input", None)
        instruction = _get(record, "instruction")
        user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
    elif key == "turns":
        turns = _get(record, "turns", list)
        if not turns:
            raise RowError("empty_turn", "turns", "the list of turns is empty")
        for i, turn in enumerate(turns):
            if not isinstance(turn, str):
                raise RowError("bad_type", f"turns[{i}]", f"expected a string, got {type(turn).__name__}")
        user = turns[0]
        if len(turns) > 1:
            meta["follow_up_turns"] = turns[1:]
    else:
        user = _get(record, key)
    return [prompt_row(head + [{"role": "user", "content": user}], source=source, source_id=source_id, meta=meta)]


# --- Self-Instruct seed tasks ---------------------------------------------------------------------------------


def _self_instruct(record: Mapping[str, Any], *, source: str, source_id: str, meta: dict[str, Any]) -> list[Row]:
    instruction = _get(record, "instruction")
    instances = _get(record, "instances", list)
    if not instances:
        raise RowError("missing_field", "instances", "the task has no instances")
    rows = []
    for k, inst in enumerate(instances):
        field = f"instances[{k}]"
        if not isinstance(inst, Mapping):
            raise RowError("bad_type", field, f"expected {{input, output}}, got {type(inst).__name__}")
        given = _get(inst, "input", optional=True, field=f"{field}.input")
        output = _get(inst, "output", field=f"{field}.output")
        user = f"{instruction}\n\n{given}" if given and given.strip() else instruction
        # A task with several instances gives one row each, numbered "<task>.<k>"; the usual single one keeps
        # the task's own source_id.
        sid = source_id if len(instances) == 1 else f"{source_id}.{k}"
        rows.append(sft_row([{"role": "user", "content": user}, {"role": "assistant", "content": output}],
                            source=source, source_id=sid, meta={**meta, "instance": k}))
    return rows


# --- the registry -----------------------------------------------------------------------------------------------


def _has(record: Mapping[str, Any], *keys: str) -> bool:
    return all(k in record for k in keys)


ADAPTERS: dict[str, Adapter] = {
    a.name: a
    for a in [
        Adapter("ultrafeedback", "preference",
                "prompt, chosen/rejected as message lists, score_chosen/score_rejected (also TRL's prompt-list form)",
                lambda r: _has(r, "chosen", "rejected") and _is_messages(r["chosen"]), _ultrafeedback,
                frozenset({"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "messages"})),
        Adapter("llama_factory", "preference", "conversations [{from, value}], chosen {from, value}, rejected {from, value}",
                lambda r: _has(r, "conversations", "chosen", "rejected") and isinstance(r["chosen"], Mapping),
                _llama_factory, frozenset({"conversations", "chosen", "rejected", "system"})),
        Adapter("hh_rlhf", "preference", "'Human:/Assistant:' transcripts: chosen/rejected (+ optional prompt)",
                lambda r: _has(r, "chosen", "rejected")
                and (_looks_like_transcript(r.get("prompt")) if "prompt" in r else _looks_like_transcript(r["chosen"])),
                _hh_rlhf, frozenset({"prompt", "chosen", "rejected"})),
        Adapter("pairs", "preference", "prompt, chosen, rejected strings; scores at top level or under metadata",
                lambda r: _has(r, "prompt", "chosen", "rejected") and isinstance(r["chosen"], str), _pairs,
                frozenset({"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "system", "metadata"})),
        Adapter("openai", "sft", "messages [{role, content}]; ending with a user turn: prompts",
                lambda r: "messages" in r and not _has(r, "chosen", "rejected"), _openai, frozenset({"messages"}),
                prompts_too=True),
        Adapter("sharegpt", "sft", "conversations [{from, value}] (+ optional system); first turns only: prompts",
                lambda r: "conversations" in r and not _has(r, "chosen", "rejected"), _sharegpt,
                frozenset({"conversations", "system"}), prompts_too=True),
        Adapter("self_instruct", "sft", "instruction, instances [{input, output}] (Self-Instruct seed tasks)",
                lambda r: _has(r, "instruction", "instances"), _self_instruct, frozenset({"instruction", "instances"})),
        Adapter("prompts", "prompt",
                "prompt (a string or messages), instruction (+ input), question, or turns (MT-Bench: the first is the "
                "prompt); AlpacaEval's instruction/output/generator (the output kept in meta)",
                _is_prompt_list, _prompts, frozenset({"system"})),
        Adapter("alpaca", "sft", "instruction, input, output (+ optional system, history); no output: prompts",
                lambda r: _has(r, "instruction", "output"), _alpaca,
                frozenset({"instruction", "input", "output", "system", "history"}), prompts_too=True),
    ]
}


class UnknownFormat(ValueError):
    """No adapter recognises the record's fields (or an unknown name was forced)."""


def formats_help() -> str:
    """One line per format: its name, row kind and the fields it reads."""
    return "\n".join(f"  {a.name:<14} {'/'.join(a.kinds):<11} {a.fields}" for a in ADAPTERS.values())


def get_adapter(name: str) -> Adapter:
    if name not in ADAPTERS:
        raise UnknownFormat(f"unknown format {name!r}; the formats are:\n{formats_help()}")
    return ADAPTERS[name]


def detect_format(record: Any) -> Adapter:
    """The adapter for a record, judged from its fields and their types (first match in ADAPTERS order)."""
    if isinstance(record, Mapping):
        for adapter in ADAPTERS.values():
            if adapter.detect(record):
                return adapter
        fields = sorted(record)
    else:
        fields = [f"(a {type(record).__name__}, not an object)"]
    raise UnknownFormat(f"fields {fields} match no format; the formats are:\n{formats_help()}")
