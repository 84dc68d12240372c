"""The OpenAI-compatible HTTP backend: `vllm serve`, a hosted API, or any server speaking /v1/completions
(raw prefixes) and /v1/chat/completions (conversations).

Every call has a timeout; connection errors, 429 and 5xx answers are retried with exponential backoff; at
most `concurrency` requests are in flight. The server applies the chat template for `messages`; raw prefixes
(MAGPIE) need the template on this side: pass `tokenizer:` (a folder or id) or use a `template:` preset.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from alignmix.synth.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    ProgressFn,
    tokenizer_special_tokens,
)

RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class OpenAIBackendError(RuntimeError):
    pass


class OpenAIBackend(Backend):
    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        tokenizer: str | None = None,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        concurrency: int = 8,
        batch_size: int = 64,
        top_logprobs: int = 20,
        **options: Any,
    ):
        super().__init__(model, tokenizer=tokenizer, batch_size=batch_size, **options)
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY", "EMPTY")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.concurrency = concurrency
        # next-token probabilities: how many of the most likely tokens to ask for (vLLM allows 20, OpenAI 5).
        self.top_logprobs = top_logprobs
        self._client = None
        self._tokenizer = None

    def load(self) -> None:
        if self._loaded:
            return
        import httpx

        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
            headers={"Authorization": f"Bearer {self.api_key}"},
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        if self.tokenizer_name:
            from transformers import AutoTokenizer

            from alignmix.pipeline.models import resolve_model

            self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self.tokenizer_name))
        self._loaded = True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def chat_template(self) -> str | None:
        self.load()
        return self._tokenizer.chat_template if self._tokenizer is not None else None

    def special_tokens(self) -> dict[str, str]:
        self.load()
        return tokenizer_special_tokens(self._tokenizer)

    def _payload(self, r: GenerationRequest) -> tuple[str, dict[str, Any]]:
        p = r.params
        body: dict[str, Any] = {"model": self.model, "max_tokens": p.max_new_tokens, "temperature": p.temperature, "top_p": p.top_p}
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        if p.top_k:
            body["top_k"] = p.top_k  # not in OpenAI's API; vLLM and most open servers accept it
        if r.prompt is not None:
            return "/completions", {**body, "prompt": r.prompt}
        if r.template_kwargs():  # vLLM's server passes these to the chat template (Qwen3's enable_thinking)
            body["chat_template_kwargs"] = r.template_kwargs()
        return "/chat/completions", {**body, "messages": list(r.messages)}

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        for attempt in range(self.max_retries + 1):
            try:
                resp = self._client.post(path, json=body)
            except httpx.TransportError as err:
                error = f"{type(err).__name__}: {err}"
            else:
                if resp.status_code == 200:
                    return resp.json()
                error = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRY_STATUS:
                    raise OpenAIBackendError(f"{self.base_url}{path} refused the request ({error})")
            if attempt < self.max_retries:
                time.sleep(self.backoff_s * 2**attempt)
        raise OpenAIBackendError(f"{self.base_url}{path} failed after {self.max_retries + 1} tries (last: {error})")

    def _one(self, r: GenerationRequest) -> GenerationResult:
        path, body = self._payload(r)
        data = self._post(path, body)
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = choice["text"] if r.prompt is not None else (message.get("content") or "")
        # A server with a reasoning parser (`vllm serve --reasoning-parser`) returns the reasoning apart, named
        # reasoning_content (vLLM < 0.10, DeepSeek's API) or reasoning (newer vLLM, OpenRouter).
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        usage = data.get("usage") or {}
        return GenerationResult(
            text=text,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            reasoning=reasoning if isinstance(reasoning, str) else None,
        )

    def _probs_one(self, prompt: str, candidates: list[str]) -> dict[str, float]:
        body = {"model": self.model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0, "logprobs": self.top_logprobs}
        choice = self._post("/completions", body)["choices"][0]
        top = (choice.get("logprobs") or {}).get("top_logprobs") or []
        if not top or not isinstance(top[0], dict):
            raise OpenAIBackendError(
                f"{self.base_url}/completions returned no top_logprobs for logprobs={self.top_logprobs}: this server "
                "does not give next-token probabilities, so use the judge's `rating: parsed` (or a server that does, "
                "such as `vllm serve`)"
            )
        probs = dict.fromkeys(candidates, 0.0)
        for token, logprob in top[0].items():
            if token in probs:
                probs[token] += math.exp(logprob)
        return probs

    def _next_token_probs(self, prompts: list[str], candidates: list[str]) -> list[dict[str, float]]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._probs_one(p, candidates), prompts))

    def _generate(self, requests: list[GenerationRequest], progress: ProgressFn | None) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            for res in pool.map(self._one, requests):
                results.append(res)
                if progress:
                    progress(1, res.completion_tokens)
        return results

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "base_url": self.base_url}
