"""The one generation interface every backend implements.

A request is either a raw text prefix (`prompt`, completed as-is: MAGPIE's pre-query template, a prefilled
assistant turn) or a conversation (`messages`, rendered with the model's chat template and its generation
prompt). Each request carries its own sampling parameters and seed:

    >>> backend = get_backend({"backend": "transformers", "model": "default"})        # doctest: +SKIP
    >>> backend.generate([GenerationRequest(prompt="<|im_start|>user\\n",
    ...                                     params=SamplingParams(max_new_tokens=32, stop=("<|im_end|>",), seed=1))])
    [GenerationResult(text='What is the capital of France?', finish_reason='stop', ...)]

Models load lazily in `load()` (called by the first `generate`), never at construction. A process keeps one
local model loaded at a time: loading a second releases the first (its weights and, on a GPU, its memory), which
loads again on its next `generate`. A recipe that generates with one model and judges with another thus runs
each stage with the whole GPU, where two vLLM engines at 0.5 of its memory each would not leave room for a third.
"""

from __future__ import annotations

import gc
import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """Per-request sampling. temperature 0 means greedy. `seed` makes a sampled request reproducible; give
    every request its own (one shared seed makes every sample of a batch identical)."""

    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)


@dataclass(frozen=True)
class GenerationRequest:
    """`enable_thinking` goes to the chat template as Qwen3's templates read it (None: not passed, the template's
    default); it applies to `messages` requests only, a raw `prompt` being completed as written."""

    params: SamplingParams = field(default_factory=SamplingParams)
    prompt: str | None = None
    messages: tuple[dict[str, str], ...] | list[dict[str, str]] | None = None
    enable_thinking: bool | None = None

    def template_kwargs(self) -> dict[str, Any]:
        return {} if self.enable_thinking is None else {"enable_thinking": self.enable_thinking}

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("a GenerationRequest needs exactly one of `prompt` (raw prefix) or `messages` (chat)")


@dataclass(frozen=True)
class GenerationResult:
    """`text` is the completion; `reasoning` is set only where the backend returned the reasoning apart (an
    OpenAI-compatible server with a reasoning parser), `text` then being the answer alone."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    reasoning: str | None = None


def request_seed(*parts: Any) -> int:
    """A per-request seed derived from the run seed and the request's position, stable across runs.

    >>> request_seed(13, "magpie", 0, 5) == request_seed(13, "magpie", 0, 5) != request_seed(13, "magpie", 0, 6)
    True
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


ProgressFn = Callable[[int, int], None]  # (requests finished, completion tokens) since the last call


class Backend(ABC):
    """A generation backend. Subclasses implement `load`, `_generate` and the chat-template access."""

    name: str = "base"

    def __init__(self, model: str, *, tokenizer: str | None = None, batch_size: int = 16, **options: Any):
        self.model = model
        self.tokenizer_name = tokenizer
        self.batch_size = batch_size
        self.options = options
        self._loaded = False
        # One generate at a time per backend: Prefect may run tasks in threads that share a loaded model.
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load heavy resources (weights, tokenizer, engine). Idempotent."""
        self._loaded = True

    def release(self) -> None:
        """Free what `load()` took (weights, engine, GPU memory); the next `generate` loads again."""
        self._loaded = False

    @contextmanager
    def loaded(self) -> Iterator[None]:
        """Hold this backend's lock with its model loaded: one call at a time uses the weights."""
        with self._lock:
            if not self._loaded:
                self.load()
            yield

    def generate(self, requests: Sequence[GenerationRequest], progress: ProgressFn | None = None) -> list[GenerationResult]:
        if not requests:
            return []
        with self.loaded():
            return self._generate(list(requests), progress)

    @abstractmethod
    def _generate(self, requests: list[GenerationRequest], progress: ProgressFn | None) -> list[GenerationResult]: ...

    def next_token_probs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[dict[str, float]]:
        """For each raw prompt, the model's probability (full-vocabulary softmax, no sampling) that the next token
        is each candidate. A candidate that is not a single token of the vocabulary (or, for backends that only
        see the top few tokens, is not among them) gets 0.0.

            >>> backend.next_token_probs(["...Rating:"], ["1", " 1"])              # doctest: +SKIP
            [{'1': 0.0123, ' 1': 0.0004}]
        """
        if not prompts:
            return []
        with self.loaded():
            return self._next_token_probs(list(prompts), list(candidates))

    def generate_and_probe(
        self, requests: Sequence[GenerationRequest], candidates: Sequence[str], then: str,
        progress: ProgressFn | None = None,
    ) -> tuple[list[GenerationResult], list[tuple[dict[str, float], dict[str, float]]]]:
        """`generate(requests)`, and for each raw-prompt request `next_token_probs` after its prompt `p` and after
        `p + then`: what a G-Eval judge reads (the rating's distribution) beside what it writes (the rationale).
        Backends that see the logits while they decode read both off the generation where they can."""
        prompts = [self.request_text(r) for r in requests]
        probs = self.next_token_probs([p + s for p in prompts for s in ("", then)], candidates)
        return self.generate(requests, progress), [(probs[2 * k], probs[2 * k + 1]) for k in range(len(prompts))]

    def _next_token_probs(self, prompts: list[str], candidates: list[str]) -> list[dict[str, float]]:
        raise NotImplementedError(
            f"the {self.name} backend cannot return next-token probabilities: use the judge's `rating: parsed`"
        )

    @abstractmethod
    def chat_template(self) -> str | None:
        """The model's chat template (Jinja), or None when the backend cannot see one."""

    @abstractmethod
    def special_tokens(self) -> dict[str, str]:
        """{"bos_token": ..., "eos_token": ...}: what templates refer to, and the end-of-sequence text."""

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                    **template_kwargs: Any) -> str:
        """The conversation rendered with the model's chat template (raises if the backend has none);
        `template_kwargs` (`enable_thinking`) are passed to the template as variables."""
        from alignmix.synth.templates import render_template

        template = self.chat_template()
        if template is None:
            raise ValueError(
                f"the {self.name} backend for {self.model!r} has no chat template: give `tokenizer:` (a folder or id "
                "whose tokenizer_config has one) or a `template:` preset"
            )
        return render_template(template, messages, add_generation_prompt=add_generation_prompt,
                               **self.special_tokens(), **template_kwargs)

    def request_text(self, request: GenerationRequest) -> str:
        """The text a request completes: its raw prompt, or its conversation through the chat template."""
        if request.prompt is not None:
            return request.prompt
        return self.render_chat(request.messages, **request.template_kwargs())

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model}


def tokenizer_special_tokens(tokenizer: Any | None) -> dict[str, str]:
    """A Hugging Face tokenizer's {"bos_token", "eos_token"}; "" where it has none, or where there is no tokenizer."""
    if tokenizer is None:
        return {"bos_token": "", "eos_token": ""}
    return {"bos_token": tokenizer.bos_token or "", "eos_token": tokenizer.eos_token or ""}


# The one local model loaded in this process; guarded by _RESIDENT_LOCK (loads happen one at a time).
_resident: LocalModelBackend | None = None
_RESIDENT_LOCK = threading.Lock()


def resident_backend() -> LocalModelBackend | None:
    """The local-model backend whose weights are loaded now, if any."""
    return _resident


def release_resident() -> None:
    """Release the loaded local model, if any: what training calls first, so that a vLLM engine left over from
    generating or judging does not keep its share of the GPU while the policy trains."""
    with _RESIDENT_LOCK:
        if _resident is not None:
            with _resident._lock:
                _resident.release()


class LocalModelBackend(Backend):
    """A backend that loads the weights in this process (transformers, vLLM): `dtype` and `trust_remote_code`
    settings, and the Hugging Face tokenizer that `load()` puts in `self.tokenizer`, which supplies the chat
    template and special tokens.

    Subclasses implement `_load()` and `_release()`; `load()` first releases whichever other local backend is
    loaded, so that one model at a time holds memory:

        >>> a = get_backend({"backend": "vllm", "model": "default"}); a.generate(reqs)      # doctest: +SKIP
        >>> b = get_backend({"backend": "vllm", "model": "judge-model"}); b.generate(reqs)  # doctest: +SKIP
        >>> (a._loaded, resident_backend() is b)                                           # doctest: +SKIP
        (False, True)
    """

    def __init__(self, model: str, *, tokenizer: str | None = None, batch_size: int = 16, dtype: str = "auto",
                 trust_remote_code: bool = False, adapter: str | None = None, **options: Any):
        super().__init__(model, tokenizer=tokenizer, batch_size=batch_size, **options)
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        # A LoRA adapter folder (peft) applied on top of `model`: how a trained policy (iterative DPO) samples.
        self.adapter = adapter
        self.tokenizer: Any = None

    def load(self) -> None:
        global _resident
        if self._loaded:
            return
        with _RESIDENT_LOCK:
            if self._loaded:
                return
            previous = _resident
            if previous is not None and previous is not self:
                with previous._lock:  # waits for a generate running in another thread to finish
                    previous.release()
            self._load()
            self._loaded = True
            _resident = self

    def release(self) -> None:
        global _resident
        if self._loaded:
            self._release()
            self._loaded = False
        if _resident is self:
            _resident = None
        gc.collect()
        try:
            import torch
        except ImportError:
            return
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @abstractmethod
    def _load(self) -> None:
        """Load the weights and set `self.tokenizer`."""

    @abstractmethod
    def _release(self) -> None:
        """Drop every reference to the weights (and stop any engine processes)."""

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **({"adapter": str(self.adapter)} if self.adapter else {})}

    def tokenizer_path(self, model_path: str) -> str:
        """Where the tokenizer loads from: `tokenizer:` (resolved) when given, else the model's own folder."""
        from alignmix.pipeline.models import resolve_model

        return resolve_model(self.tokenizer_name) if self.tokenizer_name else model_path

    def chat_template(self) -> str | None:
        self.load()
        return self.tokenizer.chat_template

    def special_tokens(self) -> dict[str, str]:
        self.load()
        return tokenizer_special_tokens(self.tokenizer)
