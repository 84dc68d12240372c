"""Thinking rows as trainer input: reasoning rendered inline in the final assistant turn (SmolLM2's template) or
through Qwen3's own template, the loss mask on reasoning and answer, earlier turns' reasoning dropped, DPO pairs
with their reasoning. The default model's real tokenizer; Qwen3's real template from the shared data."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from alignmix.pipeline.models import resolve_model
from alignmix.pipeline.schema import preference_row, to_frame
from alignmix.training.data import preference_examples, tokenize_preference, tokenize_sft

USER = {"role": "user", "content": "What is 3 + 4?"}
THINKING = {"role": "assistant", "content": "7", "reasoning_content": "Three and four make seven."}
EARLIER = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "reasoning_content": "Greet back."}]


@pytest.fixture
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("default"))


@pytest.fixture
def qwen3(tokenizer, shared_data):
    path = shared_data / "reasoning" / "qwen3_chat_template.jinja"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    return tokenizer


def masked(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, m in zip(enc["input_ids"], enc["assistant_masks"]) if m])


def test_smollm2_learns_the_inline_reasoning_and_the_answer(tokenizer):
    enc = tokenize_sft(tokenizer, [USER, THINKING])
    assert masked(tokenizer, enc) == "<think>\nThree and four make seven.\n</think>\n\n7<|im_end|>"


def test_earlier_turns_lose_their_reasoning(tokenizer):
    enc = tokenize_sft(tokenizer, [*EARLIER, USER, THINKING])
    text = tokenizer.decode(enc["input_ids"])
    assert "Greet back." not in text and "<|im_start|>assistant\nHello!<|im_end|>" in text
    assert masked(tokenizer, enc) == "Hello!<|im_end|><think>\nThree and four make seven.\n</think>\n\n7<|im_end|>"


def test_non_thinking_row_gets_the_empty_block(tokenizer):
    enc = tokenize_sft(tokenizer, [USER, {**THINKING, "reasoning_content": ""}])
    assert masked(tokenizer, enc) == "<think>\n\n</think>\n\n7<|im_end|>"
    plain = tokenize_sft(tokenizer, [USER, {**THINKING, "reasoning_content": None}])
    assert masked(tokenizer, plain) == "7<|im_end|>"


def test_qwen3_template_renders_the_final_turns_reasoning(qwen3):
    enc = tokenize_sft(qwen3, [USER, THINKING])
    assert masked(qwen3, enc) == "<think>\nThree and four make seven.\n</think>\n\n7<|im_end|>"
    # Qwen3 renders an earlier turn without its think block once a user turn follows: only the final turn is
    # located, and the earlier reasoning is nowhere in the text.
    enc = tokenize_sft(qwen3, [*EARLIER, USER, THINKING])
    assert "Greet back." not in qwen3.decode(enc["input_ids"])
    assert masked(qwen3, enc) == "<think>\nThree and four make seven.\n</think>\n\n7<|im_end|>"


def test_dpo_pairs_keep_their_reasoning(tokenizer):
    wrong = {"role": "assistant", "content": "8", "reasoning_content": "Three and four make eight."}
    pair = preference_row(USER["content"], [USER, THINKING], [USER, wrong], source="p", source_id="0")
    prepared = preference_examples(to_frame([pair], "preference"))
    [ex] = prepared.rows
    assert ex["chosen"] == [{"role": "assistant", "content": "<think>\nThree and four make seven.\n</think>\n\n7"}]
    ids = tokenize_preference(tokenizer, ex, None)
    assert tokenizer.decode(ids["rejected_ids"]) == "<think>\nThree and four make eight.\n</think>\n\n8<|im_end|>\n"
