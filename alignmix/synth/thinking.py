"""Generation with a thinking model: the reasoning apart from the answer, each with its own token budget.

A request with `thinking:` is answered in two calls, as Qwen3's "thinking budget" works:

    1. reasoning   the chat template's generation prompt (with `enable_thinking`), then `<think>\\n`; the model
                   writes until `</think>` or `max_reasoning_tokens`
    2. answer      the same text plus the reasoning and `\\n</think>\\n\\n` (the block closed by us when the budget
                   ran out); the model writes the answer until its end of turn or `max_answer_tokens`

    >>> cfg = ThinkingConfig(max_reasoning_tokens=512, max_answer_tokens=128)
    >>> traces = generate_traces(backend, [ThinkingRequest(messages, sampling, seed=7)], cfg)   # doctest: +SKIP
    >>> traces[0].reasoning, traces[0].answer, traces[0].finish_reason                        # doctest: +SKIP
    ('3 + 4 is 7.', 'Tom has 7 apples.', 'stop')

`finish_reason` is `reasoning_length` when the reasoning hit its budget (the trace was cut inside the reasoning,
whatever the answer did), else the answer's `stop` / `length`. With `on_budget: stop` the answer is not asked
for at all after a cut reasoning: the trace has no answer, and the generators reject it (`truncated_reasoning`).

With `enable_thinking: false` a request is one call of `max_answer_tokens` (what the model writes is still split,
in case it thinks anyway). Without budgets (`max_reasoning_tokens: null`) a request is one call of
`max_new_tokens`, and its text is taken
apart by `alignmix.pipeline.reasoning.split_reasoning` (a budget hit inside an unclosed block is again
`reasoning_length`). Either way the prompt goes to the model as raw text (the backend's chat template rendered
here), so the same code serves the transformers, vLLM and OpenAI-compatible (/completions) backends.
vLLM's reasoning parsers belong to its server (`vllm serve --reasoning-parser`); the offline engine returns text,
which is why the split happens here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.reasoning import THINK, split_reasoning
from alignmix.pipeline.schema import RowError
from alignmix.synth.backends.base import Backend, GenerationRequest, ProgressFn, SamplingParams


class ThinkingConfig(StrictModel):
    """How a thinking model answers: `enable_thinking` for its template, and the token budgets."""

    enable_thinking: bool = Field(True, description="passed to the chat template (Qwen3 reads it); false: no thinking")
    max_reasoning_tokens: int | None = Field(
        512, gt=0, description="the reasoning's budget; null: one call of max_new_tokens, split afterwards"
    )
    max_answer_tokens: int = Field(256, gt=0, description="the answer's budget, after the reasoning")
    reasoning_stops: list[str] = Field(
        default_factory=list, description="more strings that end the reasoning as </think> does, for a model that was "
        "never taught to close the block (the demo's SmolLM2 thinks one line: ['\\n'])"
    )
    on_budget: Literal["close", "stop"] = Field(
        "close", description="when the reasoning hits its budget: close the block and write the answer (close), or "
        "leave the trace without an answer (stop; the row is rejected as truncated_reasoning)"
    )


@dataclass(frozen=True)
class ThinkingRequest:
    messages: list[dict[str, str]]
    sampling: SamplingParams  # max_new_tokens applies only without a reasoning budget
    seed: int | None = None


@dataclass(frozen=True)
class Trace:
    """A generated turn: reasoning (None when the model wrote none), answer ("" when there is none), why it
    ended, tokens in all and per part (None where one call wrote both), and the raw text (for rejected rows)."""

    reasoning: str | None
    answer: str
    finish_reason: str  # stop | length | reasoning_length
    completion_tokens: int
    reasoning_tokens: int | None
    answer_tokens: int | None
    raw: str
    malformed: RowError | None = None

    def meta(self) -> dict[str, Any]:
        return {"finish_reason": self.finish_reason, "reasoning_tokens": self.reasoning_tokens,
                "answer_tokens": self.answer_tokens}

    def rejection(self) -> tuple[str, str] | None:
        """(reason, detail) when the trace cannot become a row, else None."""
        if self.malformed is not None:
            return self.malformed.reason, self.malformed.detail()
        if self.finish_reason == "reasoning_length" and not self.answer:
            return "truncated_reasoning", f"no end of reasoning within {self.completion_tokens} tokens"
        if not self.answer:
            return "empty_response", f"{self.completion_tokens} tokens, no answer after stripping"
        return None

    def message(self) -> dict[str, Any]:
        return {"role": "assistant", "content": self.answer, "reasoning_content": self.reasoning}


def generate_traces(backend: Backend, requests: list[ThinkingRequest], cfg: ThinkingConfig, stops: tuple[str, ...] = (),
                    progress: ProgressFn | None = None) -> list[Trace]:
    """Answer every request through `backend` in thinking mode (see the module docstring); `stops` end the
    answer (the end-of-turn markers)."""
    if not requests:
        return []
    eos = backend.special_tokens().get("eos_token")
    stops = tuple(dict.fromkeys([*stops, *([eos] if eos else [])]))
    prompts = [backend.render_chat(r.messages, True, enable_thinking=cfg.enable_thinking) for r in requests]
    if not cfg.enable_thinking:
        return _one_call(backend, requests, prompts, stops, cfg.max_answer_tokens, progress)
    if cfg.max_reasoning_tokens is None:
        return _one_call(backend, requests, prompts, stops, None, progress)
    first = backend.generate([
        GenerationRequest(prompt=_opened(p), params=_params(r, cfg.max_reasoning_tokens, (THINK[1], *cfg.reasoning_stops, *stops), 0))
        for p, r in zip(prompts, requests)
    ], _tokens_only(progress))  # fmt: skip
    reasoning = [_reasoning_text(res.text) for res in first]
    cut = [res.finish_reason == "length" for res in first]
    todo = [i for i in range(len(requests)) if not (cut[i] and cfg.on_budget == "stop")]
    second = backend.generate([
        GenerationRequest(prompt=_closed(prompts[i], reasoning[i]), params=_params(requests[i], cfg.max_answer_tokens, stops, 1))
        for i in todo
    ], progress)  # fmt: skip
    if progress and len(todo) < len(requests):
        progress(len(requests) - len(todo), 0)  # cut inside their reasoning, with no answer to wait for
    answers = dict(zip(todo, second))
    traces = []
    for i, res in enumerate(first):
        ans = answers.get(i)
        finish = "reasoning_length" if cut[i] else (ans.finish_reason if ans else "stop")
        answer_tokens = ans.completion_tokens if ans else 0
        traces.append(Trace(reasoning[i], ans.text.strip() if ans else "", finish, res.completion_tokens + answer_tokens,
                            res.completion_tokens, answer_tokens, _closed("", reasoning[i]) + (ans.text if ans else "")))
    return traces


def _one_call(backend: Backend, requests: list[ThinkingRequest], prompts: list[str], stops: tuple[str, ...],
              max_tokens: int | None, progress: ProgressFn | None) -> list[Trace]:
    """One call per request, the text split afterwards: no reasoning budget (the model opens the block itself, or
    the template did; `max_tokens` None: the request's max_new_tokens), or thinking off (the answer's budget)."""
    results = backend.generate([
        GenerationRequest(prompt=p, params=_params(r, max_tokens or r.sampling.max_new_tokens, stops, 0))
        for p, r in zip(prompts, requests)
    ], progress)  # fmt: skip
    traces = []
    for prompt, res in zip(prompts, results):
        n = res.completion_tokens
        text = THINK[0] + "\n" + res.text if _opens(prompt) else res.text  # the template opened the block
        try:
            reasoning, answer = split_reasoning(text, "completion")
        except RowError as err:
            if err.reason == "unclosed_reasoning" and res.finish_reason == "length":
                traces.append(Trace(_reasoning_text(text), "", "reasoning_length", n, n, 0, text))
            else:
                traces.append(Trace(None, "", res.finish_reason, n, None, None, text, malformed=err))
            continue
        parts = (0, n) if reasoning is None else (None, None)
        traces.append(Trace(reasoning, answer.strip(), res.finish_reason, n, *parts, text))
    return traces


def _tokens_only(progress: ProgressFn | None) -> ProgressFn | None:
    """The reasoning call reports its tokens; a request counts as finished once its answer is."""
    return None if progress is None else (lambda done, tokens: progress(0, tokens))


def _params(r: ThinkingRequest, max_tokens: int, stops: tuple[str, ...], part: int) -> SamplingParams:
    s = r.sampling
    seed = None if r.seed is None else (r.seed + part) & 0x7FFF_FFFF  # each call its own stream
    return SamplingParams(max_tokens, s.temperature, s.top_p, s.top_k, stops, seed)


def _opens(prompt: str) -> bool:
    return prompt.rstrip().endswith(THINK[0])


def _opened(prompt: str) -> str:
    """The prompt with the reasoning block open (templates that open it themselves are left as they are)."""
    return prompt if _opens(prompt) else prompt + THINK[0] + "\n"


def _closed(prompt: str, reasoning: str) -> str:
    return f"{_opened(prompt)}{reasoning}\n{THINK[1]}\n\n"


def _reasoning_text(text: str) -> str:
    """What the model wrote inside the block: a repeated opening marker and the closing one taken off."""
    return text.split(THINK[1], 1)[0].strip().removeprefix(THINK[0]).strip()


def answer(backend: Backend, conversations: list[list[dict[str, str]]], sampling: Any, thinking: ThinkingConfig | None,
           seeds: list[int], stops: tuple[str, ...] = (), progress: ProgressFn | None = None) -> list[Trace]:
    """The next assistant turn of each conversation as a Trace: in thinking mode when `thinking` is given, else
    one plain chat request each (the text kept whole as the answer). `sampling` is a recipe's `Sampling`."""
    if thinking is not None:
        requests = [ThinkingRequest(list(c), sampling.params(stops), seed) for c, seed in zip(conversations, seeds)]
        return generate_traces(backend, requests, thinking, stops, progress)
    results = backend.generate(
        [GenerationRequest(messages=c, params=sampling.params(stops, seed)) for c, seed in zip(conversations, seeds)],
        progress,
    )
    return [Trace(r.reasoning, r.text.strip(), r.finish_reason, r.completion_tokens, None if r.reasoning else 0,
                  None if r.reasoning else r.completion_tokens, r.text) for r in results]
