"""A mix's shards as trainer input: SFT conversations tokenized with an assistant-only loss mask, and
preference rows in TRL's conversational prompt/chosen/rejected form.

The assistant mask is built from the rendered turns, not from `{% generation %}` markers (SmolLM2's ChatML
template has none): each assistant turn's character span is the text that rendering the conversation up to and
including that turn adds after rendering it up to the turn with a generation prompt; the span ends at the
end-of-turn token, so the model learns to stop, and the newline the template puts after it is left out.

    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
                                                           ^^^^^^^^^^^^^^^^      mask = 1

Reasoning (a message's `reasoning_content`) is written inline before the answer, `<think>\\n...\\n</think>\\n\\n`
(`alignmix.pipeline.reasoning.inline_messages`), and kept only in the assistant turns after the last user turn, as
Qwen3's template renders a conversation: SmolLM2's template, which knows nothing of reasoning, then shows the model
its thinking, and Qwen3's template splits the inline block back into its own `<think>` markup, the same text as
from `reasoning_content`. The loss mask covers the reasoning and the answer. A non-thinking row of a fused mix
(reasoning "") gets the empty block `<think>\\n\\n</think>\\n\\n`. Qwen3's template renders an earlier turn
differently once later turns follow (it drops that turn's think block), so conversations are not rendered prefix-wise
there: such a conversation has its final assistant turn alone in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from alignmix.pipeline.reasoning import inline_messages
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.store import MixStore


class TrainingDataError(ValueError):
    """A mix that cannot be trained on: wrong row kind, a missing split, or no usable rows."""


@dataclass
class Prepared:
    """Rows ready for a trainer, and the rows set aside with their reason (never dropped silently)."""

    rows: list[dict[str, Any]]
    rejected: list[dict[str, str]] = field(default_factory=list)

    def rejected_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.rejected:
            counts[r["reason"]] = counts.get(r["reason"], 0) + 1
        return counts


def read_split(mix_dir: str | Path, split: str, kind: str, limit: int | None = None) -> pl.DataFrame:
    """The `split` rows of a mix directory, checked to be of row `kind` ('sft' or 'preference')."""
    store = MixStore(mix_dir)
    if not store.shard_files(split):
        have = ", ".join(store.splits()) or "none"
        raise TrainingDataError(f"{store.data_dir} has no {split!r} shards (splits present: {have})")
    frame = store.read(split)
    found = row_kind(frame)
    if found != kind:
        want = "SFT rows (messages)" if kind == "sft" else "preference rows (prompt/chosen/rejected)"
        raise TrainingDataError(f"{mix_dir} holds {found} rows, but this run needs {want}")
    return frame.head(limit) if limit else frame


def read_sft_split(mix_dir: str | Path, split: str, limit: int | None = None) -> pl.DataFrame:
    """SFT conversations of a split: the `messages` of SFT rows, or, in a preference mix, each pair's `chosen`
    conversation (SFT on the preferred responses, the usual step before DPO on the same mix)."""
    store = MixStore(mix_dir)
    if not store.shard_files(split):
        have = ", ".join(store.splits()) or "none"
        raise TrainingDataError(f"{store.data_dir} has no {split!r} shards (splits present: {have})")
    frame = store.read(split)
    if row_kind(frame) == "preference":
        frame = frame.select("id", pl.col("chosen").alias("messages"))
    return frame.head(limit) if limit else frame


def has_split(mix_dir: str | Path, split: str) -> bool:
    return bool(MixStore(mix_dir).shard_files(split))


def preference_examples(frame: pl.DataFrame) -> Prepared:
    """Preference rows to TRL's explicit-prompt conversational form.

    {"chosen": [u, a1], "rejected": [u, a2]} -> {"prompt": [u], "chosen": [a1], "rejected": [a2]}

    A row whose chosen and rejected conversations differ before their last turn has no shared prompt and is
    set aside with reason `prompt_mismatch`.
    """
    out, rejected = [], []
    for row in frame.select("id", "chosen", "rejected").iter_rows(named=True):
        chosen, rejected_msgs = plain_turns(row["chosen"]), plain_turns(row["rejected"])
        if chosen[:-1] != rejected_msgs[:-1]:
            rejected.append({"id": row["id"], "reason": "prompt_mismatch", "detail": "chosen/rejected prompts differ"})
            continue
        out.append({"id": row["id"], "prompt": chosen[:-1], "chosen": chosen[-1:], "rejected": rejected_msgs[-1:]})
    return Prepared(out, rejected)


def drop_long_prompts(prepared: Prepared, tokenizer: Any, max_length: int) -> Prepared:
    """Set aside (reason `prompt_too_long`) the pairs whose prompt alone fills `max_length` tokens: truncation
    would leave no completion token to compare (TRL's DPOTrainer would drop them without a word)."""
    kept, rejected = [], list(prepared.rejected)
    for ex in prepared.rows:
        n = len(tokenizer(render(tokenizer, ex["prompt"], True), add_special_tokens=False)["input_ids"])
        if n >= max_length:
            detail = f"{n} prompt tokens >= {max_length}"
            rejected.append({"id": ex["id"], "reason": "prompt_too_long", "detail": detail})
        else:
            kept.append(ex)
    return Prepared(kept, rejected)


def plain_turns(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """{role, content} turns with the reasoning of the final assistant turn(s) inline (see the module docstring)."""
    return inline_messages(messages, history=False)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns (content + end-of-turn). Where an
    earlier turn renders differently once later turns follow, only the final turn's span is located."""
    messages = plain_turns(messages)
    text = render(tokenizer, messages)
    spans = []
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i in turns:
        before = render(tokenizer, messages[:i], add_generation_prompt=True)
        through = render(tokenizer, messages[: i + 1])
        if not (through.startswith(before) and text.startswith(through)):
            if i != turns[-1]:
                continue  # Qwen3-style history rendering: this turn is not in the loss
            raise TrainingDataError(
                "the chat template does not render conversations prefix-wise (turn i's text changes when turn i+1 "
                "is added), so assistant tokens cannot be located; use a template that renders each turn once"
            )
        end = len(through.rstrip())  # the newline after the end-of-turn token belongs to no one
        spans.append((len(before), end))
    return text, spans


def tokenize_sft(tokenizer: Any, messages: list[dict[str, str]], max_length: int | None = None) -> dict[str, list[int]]:
    """`input_ids` and `assistant_masks` (1 on exactly the tokens inside assistant spans), truncated at the end."""
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for start, end in enc["offset_mapping"]:
        inside = any(s <= start and end <= e for s, e in spans) and end > start
        mask.append(1 if inside else 0)
    ids = list(enc["input_ids"])
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def sft_examples(frame: pl.DataFrame, tokenizer: Any, max_length: int) -> Prepared:
    """SFT rows tokenized for SFTTrainer; a row with no assistant token left after truncation is set aside
    with reason `truncated_away`."""
    out, rejected = [], []
    for row in frame.select("id", "messages").iter_rows(named=True):
        enc = tokenize_sft(tokenizer, row["messages"], max_length)
        if not any(enc["assistant_masks"]):
            rejected.append(
                {"id": row["id"], "reason": "truncated_away", "detail": f"no assistant token in the first {max_length}"}
            )
            continue
        out.append({"id": row["id"], **enc})
    return Prepared(out, rejected)


def tokenize_preference(tokenizer: Any, example: dict[str, Any], max_length: int | None) -> dict[str, list[int]]:
    """prompt/chosen/rejected ids the way TRL's DPOTrainer builds them: the completion starts where the
    tokenized prompt (with generation prompt) and prompt+completion diverge; prompt+completion keep their start."""

    def ids(messages: list[dict[str, str]], gen: bool = False) -> list[int]:
        return list(tokenizer(render(tokenizer, messages, gen), add_special_tokens=False)["input_ids"])

    prompt = ids(example["prompt"], gen=True)
    full_c, full_r = ids(example["prompt"] + example["chosen"]), ids(example["prompt"] + example["rejected"])
    n = min(_common_prefix(prompt, full_c), _common_prefix(prompt, full_r))
    out = {"prompt_ids": prompt[:n], "chosen_ids": full_c[n:], "rejected_ids": full_r[n:]}
    if max_length is not None:
        room = max(max_length - n, 0)
        out = {"prompt_ids": prompt[:n][:max_length], "chosen_ids": full_c[n:][:room],
               "rejected_ids": full_r[n:][:room]}
    return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
