"""The transformers backend: the CPU default. Batched decoding with left padding and the KV cache, written
out as a plain loop so that every request keeps its own sampling parameters, seed and stop strings.

Requests are sorted by prompt length before batching (less padding); finished rows leave the batch and the
cache (`batch_select_indices`), so a long answer does not keep short ones computing.
"""

from __future__ import annotations

import inspect
from typing import Any

from alignmix.synth.backends.base import (
    GenerationRequest,
    GenerationResult,
    LocalModelBackend,
    ProgressFn,
    SamplingParams,
)

_STOP_WINDOW = 16  # tokens decoded per step to look for a stop string; stop strings are a few tokens long


class TransformersBackend(LocalModelBackend):
    name = "transformers"

    def __init__(
        self,
        model: str = "default",
        *,
        tokenizer: str | None = None,
        batch_size: int = 16,
        device: str | None = None,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        **options: Any,
    ):
        super().__init__(model, tokenizer=tokenizer, batch_size=batch_size, dtype=dtype,
                         trust_remote_code=trust_remote_code, **options)
        self.device = device
        self.lm = None

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from alignmix.pipeline.models import resolve_model

        path = resolve_model(self.model)
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.tokenizer_path(path), trust_remote_code=self.trust_remote_code
        )
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[self.dtype]
        if dtype == "auto" and device == "cpu":
            dtype = torch.float32
        self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=self.trust_remote_code)
        self.lm.to(device).eval()
        self.device = device
        eos = self.lm.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids)
        params = inspect.signature(self.lm.forward).parameters
        # transformers 5 renamed past_key_values to cache; only the last position's logits are needed.
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def _release(self) -> None:
        self.lm = None

    def _generate(self, requests: list[GenerationRequest], progress: ProgressFn | None) -> list[GenerationResult]:
        prompts = [r.prompt if r.prompt is not None else self.render_chat(r.messages) for r in requests]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(requests)), key=lambda i: -len(ids[i]))
        results: list[GenerationResult | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for i, res in zip(chunk, self._batch([ids[i] for i in chunk], [requests[i].params for i in chunk], progress)):
                results[i] = res
        return results  # type: ignore[return-value]

    def _next_token_probs(self, prompts: list[str], candidates: list[str]) -> list[dict[str, float]]:
        import torch

        token_of = {}
        for c in candidates:
            tok = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if len(tok) == 1:
                token_of[c] = tok[0]
        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
        index = torch.tensor(list(token_of.values()), dtype=torch.long)
        results: list[dict[str, float]] = [{} for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            input_ids, attention, positions = _left_pad([ids[i] for i in chunk], self.pad_id)
            with torch.inference_mode():
                out = self.lm(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                              position_ids=positions.to(self.device), use_cache=False, **self._keep)  # fmt: skip
            probs = torch.softmax(out.logits[:, -1, :].float().cpu(), dim=-1)[:, index] if token_of else None
            for row, i in enumerate(chunk):
                picked = dict(zip(token_of, probs[row].tolist())) if probs is not None else {}
                results[i] = {c: float(picked.get(c, 0.0)) for c in candidates}
        return results

    def _batch(self, ids: list[list[int]], params: list[SamplingParams], progress: ProgressFn | None) -> list[GenerationResult]:
        import torch
        from transformers import DynamicCache

        n = len(ids)
        input_ids, attention, positions = _left_pad(ids, self.pad_id)
        generators = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
        tokens: list[list[int]] = [[] for _ in range(n)]
        finish: list[str] = ["length"] * n
        active = list(range(n))
        dev = self.device
        cache = DynamicCache(config=self.lm.config)
        kw = {self._cache_arg: cache, "use_cache": True, **self._keep}
        with torch.inference_mode():
            out = self.lm(
                input_ids=input_ids.to(dev), attention_mask=attention.to(dev), position_ids=positions.to(dev), **kw
            )
            last_pos = positions[:, -1]
            while True:
                logits = out.logits[:, -1, :].float().cpu()
                chosen = [self._sample(logits[row], params[i], generators[i]) for row, i in enumerate(active)]
                keep_rows, done = [], 0
                for row, (i, tok) in enumerate(zip(active, chosen)):
                    if tok in self.eos_ids:
                        finish[i] = "stop"
                        done += 1
                        continue
                    tokens[i].append(tok)
                    if params[i].stop and self._hit_stop(tokens[i], params[i].stop):
                        finish[i] = "stop"
                        done += 1
                    elif len(tokens[i]) >= params[i].max_new_tokens:
                        done += 1
                    else:
                        keep_rows.append(row)
                if progress:
                    progress(done, len(active))
                if not keep_rows:
                    break
                if len(keep_rows) < len(active):
                    index = torch.tensor(keep_rows, dtype=torch.long)
                    cache.batch_select_indices(index.to(dev))
                    attention, last_pos = attention[index], last_pos[index]
                    chosen = [chosen[r] for r in keep_rows]
                    active = [active[r] for r in keep_rows]
                attention = torch.cat([attention, torch.ones((len(active), 1), dtype=torch.long)], dim=1)
                last_pos = last_pos + 1
                out = self.lm(
                    input_ids=torch.tensor(chosen, dtype=torch.long).unsqueeze(1).to(dev),
                    attention_mask=attention.to(dev),
                    position_ids=last_pos.unsqueeze(1).to(dev),
                    **kw,
                )
        results = []
        for i in range(n):
            text = self.tokenizer.decode(tokens[i], skip_special_tokens=False)
            text, hit = _cut_at_stop(text, params[i].stop)
            results.append(
                GenerationResult(
                    text=text,
                    finish_reason="stop" if hit else finish[i],  # type: ignore[arg-type]
                    prompt_tokens=len(ids[i]),
                    completion_tokens=len(tokens[i]),
                )
            )
        return results

    def _hit_stop(self, tokens: list[int], stops: tuple[str, ...]) -> bool:
        tail = self.tokenizer.decode(tokens[-_STOP_WINDOW:], skip_special_tokens=False)
        return any(s in tail for s in stops)

    @staticmethod
    def _sample(logits, p: SamplingParams, generator) -> int:
        import torch

        if p.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        k = p.top_k if p.top_k and p.top_k < logits.numel() else logits.numel()
        probs = torch.softmax(logits, dim=-1)
        if k == logits.numel() and p.top_p >= 1.0:
            return int(torch.multinomial(probs, 1, generator=generator))
        # The candidates are the top-k (all tokens when k is off), cut to the smallest prefix whose mass reaches
        # top_p. A full sort of the vocabulary is slow on CPU: the top 256 nearly always hold the nucleus, and
        # when they do not (or k is larger) the full sort decides, so the result is exact either way.
        head = min(k, 256)
        values, index = torch.topk(probs, head)
        if head < k and (p.top_p >= 1.0 or float(values.sum()) < p.top_p):
            values, index = torch.topk(probs, k)
        if p.top_p < 1.0:
            drop = values.cumsum(0) - values > p.top_p
            values = values.masked_fill(drop, 0.0)
        return int(index[torch.multinomial(values, 1, generator=generator)])


def _left_pad(ids: list[list[int]], pad_id: int):
    """(input_ids, attention_mask, position_ids) for a left-padded batch; positions count real tokens only."""
    import torch

    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(ids), width), dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, width - len(x) :] = torch.tensor(x, dtype=torch.long)
        attention[row, width - len(x) :] = 1
    return input_ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string. ("Hi<|im_end|>junk", ("<|im_end|>",)) -> ("Hi", True)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
