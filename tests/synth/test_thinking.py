"""Generation with a thinking model on the real default model: `enable_thinking` reaching the chat template, the
reasoning and answer budgets (checked against plain raw-prompt generation), truncation marked, and responses /
MAGPIE rows with the reasoning apart. Budgets are a few tokens: the point is the bookkeeping, not the text."""

from __future__ import annotations

import orjson
import pytest

from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.store import MixStore
from alignmix.synth import run_generator
from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend
from alignmix.synth.responses import generate_responses
from alignmix.synth.thinking import ThinkingConfig, ThinkingRequest, generate_traces

QUESTION = [{"role": "user", "content": "What is 3 + 4?"}]
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def backend():
    b = get_backend({"backend": "transformers", "model": "default", "batch_size": 8})
    b.load()
    return b


@pytest.fixture
def with_template(backend):
    """Swap the tokenizer's chat template for the test's, and put it back."""
    original = backend.tokenizer.chat_template

    def use(template: str):
        backend.tokenizer.chat_template = template

    yield use
    backend.tokenizer.chat_template = original


def test_enable_thinking_reaches_qwen3s_template(backend, with_template, shared_data):
    path = shared_data / "reasoning" / "qwen3_chat_template.jinja"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    with_template(path.read_text(encoding="utf-8"))
    off = backend.request_text(GenerationRequest(messages=QUESTION, enable_thinking=False))
    on = backend.request_text(GenerationRequest(messages=QUESTION, enable_thinking=True))
    default = backend.request_text(GenerationRequest(messages=QUESTION))
    assert off == on + "<think>\n\n</think>\n\n"  # Qwen3's non-thinking mode: an empty block, prefilled
    assert on == default == "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"


def test_budgets_give_the_reasoning_then_the_answer(backend):
    cfg = ThinkingConfig(max_reasoning_tokens=6, max_answer_tokens=5)
    [trace] = generate_traces(backend, [ThinkingRequest(QUESTION, GREEDY, seed=1)], cfg, ("<|im_end|>",))
    # The reference: the same two steps as plain raw-prompt generation.
    prompt = backend.render_chat(QUESTION) + "<think>\n"
    stops = ("<|im_end|>",)
    [first] = backend.generate([GenerationRequest(prompt=prompt, params=SamplingParams(6, 0.0, stop=("</think>", *stops)))])
    assert first.finish_reason == "length"  # the 135M model never closes a block in 6 tokens
    closed = prompt + first.text.strip() + "\n</think>\n\n"
    [second] = backend.generate([GenerationRequest(prompt=closed, params=SamplingParams(5, 0.0, stop=stops))])
    assert (trace.reasoning, trace.answer) == (first.text.strip(), second.text.strip())
    assert (trace.finish_reason, trace.reasoning_tokens, trace.answer_tokens) == ("reasoning_length", 6, second.completion_tokens)
    assert trace.raw == f"<think>\n{trace.reasoning}\n</think>\n\n{second.text}"
    assert trace.rejection() is None and trace.message()["reasoning_content"] == trace.reasoning


def test_on_budget_stop_leaves_no_answer(backend):
    cfg = ThinkingConfig(max_reasoning_tokens=4, max_answer_tokens=5, on_budget="stop")
    [trace] = generate_traces(backend, [ThinkingRequest(QUESTION, GREEDY, seed=1)], cfg)
    assert (trace.answer, trace.finish_reason, trace.answer_tokens) == ("", "reasoning_length", 0)
    assert trace.rejection() == ("truncated_reasoning", "no end of reasoning within 4 tokens")


def test_one_call_trace_cut_inside_an_opened_block(backend, with_template):
    # A DeepSeek-R1-style template opens the block in its generation prompt: the text is split afterwards.
    with_template(backend.tokenizer.chat_template.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>\n'"))
    assert backend.render_chat(QUESTION).endswith("assistant\n<think>\n")
    cfg = ThinkingConfig(max_reasoning_tokens=None)
    [trace] = generate_traces(backend, [ThinkingRequest(QUESTION, SamplingParams(5, 0.0), seed=1)], cfg)
    assert (trace.finish_reason, trace.reasoning_tokens, trace.answer) == ("reasoning_length", 5, "")
    assert trace.raw.startswith("<think>\n") and trace.reasoning == trace.raw.removeprefix("<think>").strip()
    assert trace.rejection()[0] == "truncated_reasoning"


def test_thinking_responses_to_arithmetic_problems(backend, tmp_path):
    """Producer to consumer: generated problems (prompt rows with ground truth) answered in thinking mode."""
    run_generator({"kind": "arithmetic_problems", "name": "arith", "count": 2, "seed": 3}, tmp_path / "problems")
    problems = MixStore(tmp_path / "problems").read()
    truths = {r["messages"][0]["content"]: orjson.loads(r["meta"])["ground_truth"] for r in problems.iter_rows(named=True)}
    spec = {"name": "traces", "seed": 1, "responders": [
        {"label": "think", "n": 2, "temperature": 1.0, "thinking": {"max_reasoning_tokens": 6, "max_answer_tokens": 4}},
    ]}  # fmt: skip
    stats = generate_responses(tmp_path / "problems", spec, tmp_path / "out")
    assert stats["rows_in"] == 4 == stats["rows_kept"] + sum(stats["dropped"].values())
    rows = MixStore(tmp_path / "out").read()
    assert row_kind(rows) == "sft"
    for row in rows.iter_rows(named=True):
        meta, last = orjson.loads(row["meta"]), row["messages"][-1]
        assert meta["ground_truth"] == truths[row["messages"][0]["content"]]
        assert last["role"] == "assistant" and last["reasoning_content"] and last["content"]
        assert "<think>" not in last["content"] and meta["reasoning_tokens"] == 6
        assert meta["finish_reason"] == "reasoning_length"  # 6 tokens never close the block
        assert meta["completion_tokens"] == 6 + meta["answer_tokens"]


def test_magpie_answers_in_thinking_mode(backend, tmp_path):
    spec = {"kind": "magpie", "name": "magpie-think", "count": 2, "seed": 5, "instruction": {"max_new_tokens": 24},
            "thinking": {"max_reasoning_tokens": 4, "max_answer_tokens": 8}}  # fmt: skip
    stats = run_generator(spec, tmp_path, backend=backend)
    assert (stats["rows_in"], stats["rows_kept"]) == (2, 2)  # both queries end within 24 tokens (seed 5)
    for row in MixStore(tmp_path).read().iter_rows(named=True):
        meta, last = orjson.loads(row["meta"]), row["messages"][-1]
        assert last["reasoning_content"] and meta["finish"] == ["reasoning_length"]
        assert meta["thinking_turns"][0]["reasoning_tokens"] == 4 and meta["thinking"]["max_answer_tokens"] == 8
