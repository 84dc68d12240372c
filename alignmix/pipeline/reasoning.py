"""Reasoning traces: an assistant turn's thinking kept apart from its answer, and the markups traces come in.

A row holds the reasoning of an assistant turn in the message's `reasoning_content` (the field Qwen3's chat
template reads and vLLM's reasoning parsers fill) and the answer alone in `content`. Traces arrive inline, in one
of three markups, which `split_reasoning` takes apart:

    think        <think>\\n...\\n</think>\\n\\nanswer                      (DeepSeek-R1, QwQ, Qwen3)
    r1_zero      <think> ... </think> <answer> ... </answer>             (DeepSeek-R1-Zero's RL format)
    thought      <|begin_of_thought|> ... <|end_of_thought|>
                 <|begin_of_solution|> ... <|end_of_solution|>           (OpenThoughts, Bespoke-Stratos, Sky-T1)

    >>> split_reasoning("<think>\\n2 + 3 = 5\\n</think>\\n\\nThe sum is 5.")
    ('2 + 3 = 5', 'The sum is 5.')
    >>> split_reasoning("<|begin_of_thought|>\\n\\nadd\\n\\n<|end_of_thought|>\\n\\n<|begin_of_solution|>\\n\\n5\\n\\n<|end_of_solution|>")
    ('add', '5')
    >>> split_reasoning("No markup: all answer.")
    (None, 'No markup: all answer.')
    >>> join_reasoning("2 + 3 = 5", "The sum is 5.")
    '<think>\\n2 + 3 = 5\\n</think>\\n\\nThe sum is 5.'

A trace that is not well formed is refused with a short stable reason, never merged into the answer:

    unclosed_reasoning   the reasoning block is opened and never closed (a trace cut at the token limit)
    unclosed_answer      the answer block (<answer>, <|begin_of_solution|>) is opened and never closed
    missing_answer       the reasoning is closed and no answer follows
    nested_reasoning     a reasoning block opened inside another
    stray_marker         a marker out of place: text before the reasoning, a second block, a marker in the answer
    mixed_markup         two markups in one turn (or inline reasoning beside a separate reasoning field)

    >>> try:
    ...     split_reasoning("<think>\\nLet me see, 2 + 3 is")
    ... except RowError as err:
    ...     print(err.reason)
    unclosed_reasoning

A closing `</think>` without its opening marker is reasoning too: DeepSeek-R1's and Qwen3's templates put
`<think>\\n` in the generation prompt, so the model's output starts inside the block (vLLM's parsers read it so).
An empty block (`<think>\\n\\n</think>`, Qwen3's non-thinking turns) is reasoning `""`, not None. Reasoning and
answer come back stripped of surrounding whitespace (as content ids see them); for such texts
`split_reasoning(join_reasoning(r, a)) == (r, a)` exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from alignmix.pipeline.schema import RowError

THINK = ("<think>", "</think>")
ANSWER = ("<answer>", "</answer>")
THOUGHT = ("<|begin_of_thought|>", "<|end_of_thought|>")
SOLUTION = ("<|begin_of_solution|>", "<|end_of_solution|>")

# markup name -> (reasoning markers, answer markers; the answer block is optional)
MARKUPS: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {"think": (THINK, ANSWER), "thought": (THOUGHT, SOLUTION)}
# The separate fields a message may carry its reasoning in: vLLM / Qwen3 / DeepSeek API, and OpenRouter / vLLM>=0.10.
REASONING_FIELDS = ("reasoning_content", "reasoning")

REASONS = ("unclosed_reasoning", "unclosed_answer", "missing_answer", "nested_reasoning", "stray_marker",
           "mixed_markup")


def has_markup(text: str) -> bool:
    """Whether a text holds any reasoning marker."""
    return markup_of(text) is not None


def markup_of(text: str) -> str | None:
    """The markup a text is written in: `think`, `r1_zero` (think with an <answer> block), `thought`, or None.

    >>> markup_of("<think>a</think> <answer>b</answer>"), markup_of("plain")
    ('r1_zero', None)
    """
    think, thought = _any_in(text, THINK), _any_in(text, THOUGHT + SOLUTION)
    if think and thought:
        return "mixed"
    if thought:
        return "thought"
    if think:
        return "r1_zero" if _any_in(text, ANSWER) else "think"
    return None


def split_reasoning(text: str, field: str | None = None) -> tuple[str | None, str]:
    """(reasoning, answer) of an inline trace; (None, text) when the text has no reasoning markup.

    Raises RowError (reason one of REASONS, `field` naming where the text came from) for a malformed trace.
    """
    markup = markup_of(text)
    if markup is None:
        return None, text
    if markup == "mixed":
        raise RowError("mixed_markup", field, "holds both <think> and <|begin_of_thought|> markers; use one markup")
    reasoning_markers, answer_markers = MARKUPS["thought" if markup == "thought" else "think"]
    reasoning, rest = _reasoning_block(text, reasoning_markers, answer_markers, field)
    answer = _answer_block(rest, reasoning_markers, answer_markers, field)
    return reasoning, answer


def join_reasoning(reasoning: str | None, answer: str) -> str:
    """The inline form `<think>\\n{reasoning}\\n</think>\\n\\n{answer}` (Qwen3's); the answer alone when None."""
    if reasoning is None:
        return answer
    return f"{THINK[0]}\n{reasoning.strip()}\n{THINK[1]}\n\n{answer.strip()}"


def _reasoning_block(text: str, markers: tuple[str, str], answer: tuple[str, str],
                     field: str | None) -> tuple[str, str]:
    """The stripped reasoning and the text after it."""
    opening, closing = markers
    start, end = text.find(opening), text.find(closing)
    if end < 0:
        if start < 0:
            raise RowError("stray_marker", field, f"an answer marker with no reasoning block before it ({opening})")
        raise RowError("unclosed_reasoning", field, f"{opening} is never closed by {closing} (a truncated trace?)")
    if start > end:
        start = -1  # the block was opened by the generation prompt; the later opening is a stray one
    if start >= 0 and text[:start].strip():
        raise RowError("stray_marker", field, f"text before {opening}: the reasoning must come first")
    head = text[start + len(opening) if start >= 0 else 0:end]
    if opening in head:
        raise RowError("nested_reasoning", field, f"a second {opening} inside the reasoning block")
    if _any_in(head, answer):
        raise RowError("stray_marker", field, f"an answer marker ({answer[0]} or {answer[1]}) inside the reasoning")
    return head.strip(), text[end + len(closing):]


def _answer_block(rest: str, reasoning: tuple[str, str], markers: tuple[str, str], field: str | None) -> str:
    """The stripped answer after the reasoning: inside the answer block when there is one, else the text."""
    if _any_in(rest, reasoning):
        raise RowError("stray_marker", field, f"a second {reasoning[0]} or {reasoning[1]} after the reasoning")
    opening, closing = markers
    if _any_in(rest, markers):
        body = rest.strip()
        if not body.startswith(opening):
            raise RowError("stray_marker", field, f"text between the reasoning and {opening}, or {closing} alone")
        end = body.find(closing)
        if end < 0:
            raise RowError("unclosed_answer", field, f"{opening} is never closed by {closing} (a truncated answer?)")
        if body[end + len(closing):].strip() or opening in body[len(opening):end]:
            raise RowError("stray_marker", field, f"text after {closing}, or a second {opening}")
        rest = body[len(opening):end]
    answer = rest.strip()
    if not answer:
        raise RowError("missing_answer", field, "the reasoning is closed but no answer follows it")
    return answer


def _any_in(text: str, markers: tuple[str, ...]) -> bool:
    return any(m in text for m in markers)


# --- messages --------------------------------------------------------------------------------------------------


def reasoning_of(message: Mapping[str, Any]) -> str | None:
    """A message's reasoning: its `reasoning_content`, else (a turn still inline) what `split_reasoning` finds in
    its content. Raises RowError for malformed inline reasoning.

    >>> reasoning_of({"role": "assistant", "content": "5", "reasoning_content": "2 + 3"})
    '2 + 3'
    """
    if message.get("reasoning_content") is not None:
        return message["reasoning_content"]
    return split_reasoning(message.get("content") or "")[0]


def answer_of(message: Mapping[str, Any]) -> str:
    """A message's answer: its content without the reasoning. Raises RowError for malformed inline reasoning.

    >>> answer_of({"role": "assistant", "content": "<think>2 + 3</think>5"})
    '5'
    """
    content = message.get("content") or ""
    if message.get("reasoning_content") is not None:
        return content
    return split_reasoning(content)[1]


def split_message(message: Mapping[str, Any], field: str = "content") -> dict[str, Any]:
    """A message with its reasoning apart: from a separate field (`reasoning_content`, or `reasoning` as OpenRouter
    and recent vLLM name it) or from inline markup in an assistant turn's content. Other turns come back as they
    are. Raises RowError: the reasons of `split_reasoning`, and `mixed_markup` for reasoning in two places.

    >>> split_message({"role": "assistant", "content": "5", "reasoning": "2 + 3"})
    {'role': 'assistant', 'content': '5', 'reasoning_content': '2 + 3'}
    """
    out = {k: v for k, v in message.items() if k not in REASONING_FIELDS}
    given = [message[k] for k in REASONING_FIELDS if message.get(k) is not None]
    content = message.get("content")
    if message.get("role") != "assistant":
        if given:
            out["reasoning_content"] = given[0]  # refused by schema.validate_messages (`misplaced_reasoning`)
        return out
    if len(given) == 2 and given[0] != given[1]:
        raise RowError("mixed_markup", field, "reasoning_content and reasoning differ; keep one")
    if given:
        if isinstance(content, str) and has_markup(content):
            raise RowError("mixed_markup", field, "inline reasoning markup in content beside a separate reasoning field")
        out["reasoning_content"] = given[0].strip() if isinstance(given[0], str) else given[0]
        return out
    if isinstance(content, str) and has_markup(content):
        reasoning, answer = split_reasoning(content, field)
        if reasoning is not None:
            out["content"], out["reasoning_content"] = answer, reasoning
    return out


def inline_messages(messages: list[Mapping[str, Any]], *, history: bool = True) -> list[dict[str, str]]:
    """A conversation as plain {role, content} turns with each assistant turn's reasoning written back inline
    (`join_reasoning`), for trainers and templates that read no `reasoning_content`.

    `history=False` keeps the reasoning only in the assistant turns after the last user turn, as Qwen3's template
    renders a conversation (earlier turns lose their thinking).

    >>> inline_messages([{"role": "user", "content": "2+3?"},
    ...                  {"role": "assistant", "content": "5", "reasoning_content": "add"}])[1]["content"]
    '<think>\\nadd\\n</think>\\n\\n5'
    """
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    out = []
    for i, m in enumerate(messages):
        reasoning = m.get("reasoning_content")
        keep = reasoning is not None and m["role"] == "assistant" and (history or i > last_user)
        out.append({"role": m["role"], "content": join_reasoning(reasoning, m["content"]) if keep else m["content"]})
    return out


def split_messages(messages: Any, field: str = "messages") -> Any:
    """`split_message` on every turn of a conversation (before it is validated: anything that is not a list of
    mappings comes back as it is, for `schema.validate_messages` to refuse with its reason)."""
    if not isinstance(messages, list):
        return messages
    for m in messages:  # the common case (no reasoning anywhere) decided in one cheap pass: the per-row ingest path
        if type(m) is not dict:
            if isinstance(m, Mapping):
                break
            continue
        if m.get("reasoning_content") is not None or m.get("reasoning") is not None:
            break
        c = m.get("content")
        if type(c) is str and "<" in c and ("think>" in c or "<|" in c) and m.get("role") == "assistant":
            break
    else:
        return messages
    return [split_message(m, f"{field}[{i}].content") if isinstance(m, Mapping) else m for i, m in enumerate(messages)]
