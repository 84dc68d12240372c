"""Chat-template arithmetic for MAGPIE: the pre-query template and the end-of-turn markers, derived from any
model's own chat template by rendering a conversation around a sentinel and cutting at it.

    >>> chatml = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    ...           "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    >>> derive_pre_query_template(chatml)
    '<|im_start|>user\\n'
    >>> turn_markers(chatml)
    TurnMarkers(user_end='<|im_end|>', assistant_header='<|im_start|>assistant', assistant_end='<|im_end|>', user_header='<|im_start|>user')

The model, given the pre-query template alone, writes a user query from its own prior (MAGPIE, Xu et al. 2024).
`PRESETS` holds the known answers for the common families; tests check each against the derivation.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SENTINEL = "ALIGNMIXSENTINEL"
_SENTINELS = ("ALIGNMIXSENTINELA", "ALIGNMIXSENTINELB", "ALIGNMIXSENTINELC")


@dataclass(frozen=True)
class Preset:
    pre_query_template: str
    stop: tuple[str, ...]
    special_tokens: dict[str, str]


# The bare user-turn prefix of each family (no system prompt), as its official chat template renders it.
PRESETS: dict[str, Preset] = {
    "llama3": Preset(
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n",
        ("<|eot_id|>", "<|start_header_id|>"),
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    ),
    "chatml": Preset("<|im_start|>user\n", ("<|im_end|>", "<|im_start|>"), {"bos_token": "", "eos_token": "<|im_end|>"}),
    "gemma": Preset(
        "<bos><start_of_turn>user\n", ("<end_of_turn>", "<start_of_turn>"), {"bos_token": "<bos>", "eos_token": "<eos>"}
    ),
    "phi3": Preset("<|user|>\n", ("<|end|>", "<|assistant|>"), {"bos_token": "<s>", "eos_token": "<|endoftext|>"}),
    "mistral": Preset("<s>[INST] ", ("[/INST]", "</s>"), {"bos_token": "<s>", "eos_token": "</s>"}),
}
PRESETS["qwen"] = PRESETS["chatml"]


def render_template(
    template: str, messages: Sequence[dict[str, str]], add_generation_prompt: bool = False, **special_tokens: Any
) -> str:
    """Render a Jinja chat template exactly as transformers' `apply_chat_template(tokenize=False)` does."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[list(messages)],
        chat_template=template,
        add_generation_prompt=add_generation_prompt,
        **special_tokens,
    )
    return rendered[0]


def _cut(text: str, sentinel: str) -> tuple[str, str]:
    i = text.find(sentinel)
    if i < 0:
        raise ValueError(f"the chat template dropped the user message {sentinel!r}; it cannot serve MAGPIE")
    return text[:i], text[i + len(sentinel) :]


def derive_pre_query_template(
    template: str,
    history: Sequence[dict[str, str]] = (),
    system_prompt: str | None = None,
    **special_tokens: Any,
) -> str:
    """Everything the template writes before the next user message's content: render the conversation so far
    plus a sentinel user turn, and cut at the sentinel. Works for the first turn, with or without a system
    prompt, and for later turns (pass the turns so far as `history`)."""
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(history)
    messages.append({"role": "user", "content": SENTINEL})
    before, _ = _cut(render_template(template, messages, False, **special_tokens), SENTINEL)
    return before


@dataclass(frozen=True)
class TurnMarkers:
    user_end: str | None
    assistant_header: str | None
    assistant_end: str | None
    user_header: str | None

    def instruction_stops(self) -> tuple[str, ...]:
        """Where a generated user query ends: the end of the user turn, or the model starting another turn."""
        return _stops(self.user_end, self.assistant_header)

    def response_stops(self) -> tuple[str, ...]:
        """Where a generated answer ends: the end of the assistant turn, or the model starting another turn."""
        return _stops(self.assistant_end, self.user_header)


def _stops(end: str | None, header: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(s for s in (end, _leading_marker(header or "")) if s))


def _leading_marker(text: str) -> str | None:
    """The first special token (`<|eot_id|>`, `[/INST]`) of a separator, else its first non-empty line."""
    text = text.strip()
    if not text:
        return None
    m = re.match(r"<[^<>\s]+>|\[/?[A-Z_]+\]", text)
    return m.group(0) if m else text.splitlines()[0].strip()


def turn_markers(template: str, **special_tokens: Any) -> TurnMarkers:
    """The text between turns, read off a rendered three-turn conversation with sentinel contents."""
    a, b, c = _SENTINELS
    user = [{"role": "user", "content": a}]
    with_prompt = render_template(template, user, True, **special_tokens)
    without = render_template(template, user, False, **special_tokens)
    header = with_prompt[len(without) :] if with_prompt.startswith(without) else ""
    three = render_template(
        template,
        [{"role": "user", "content": a}, {"role": "assistant", "content": b}, {"role": "user", "content": c}],
        False,
        **special_tokens,
    )
    _, rest = _cut(three, a)
    user_to_assistant, rest = _cut(rest, b)
    assistant_to_user, _ = _cut(rest, c)
    user_end = user_to_assistant[: len(user_to_assistant) - len(header)] if header and user_to_assistant.endswith(header) else user_to_assistant
    # The next user header is what follows the assistant's end marker.
    assistant_end = _leading_marker(assistant_to_user)
    user_header_text = assistant_to_user.strip()
    if assistant_end and user_header_text.startswith(assistant_end):
        user_header_text = user_header_text[len(assistant_end) :]
    return TurnMarkers(
        user_end=_leading_marker(user_end) or _leading_marker(user_to_assistant),
        assistant_header=header.strip().splitlines()[0] if header.strip() else None,
        assistant_end=assistant_end,
        user_header=user_header_text.strip() or None,
    )
