"""The vLLM backend on a CUDA machine: MAGPIE with per-request seeds gives distinct instructions."""

from __future__ import annotations

import pytest

from alignmix.synth.backends import GenerationRequest, SamplingParams

pytestmark = [pytest.mark.cuda, pytest.mark.slow]


def test_vllm_generates_with_per_request_seeds(tmp_path):
    pytest.importorskip("vllm", reason="vllm is not installed")
    from alignmix.pipeline.store import MixStore
    from alignmix.synth.backends.vllm import VLLMBackend
    from alignmix.synth.magpie import run_magpie

    backend = VLLMBackend("default", gpu_memory_utilization=0.3)
    pre = "<|im_start|>user\n"
    same = backend.generate([GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=12, seed=7))] * 3)
    own = backend.generate([GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=12, seed=s)) for s in (1, 2, 3)])
    assert len({r.text for r in same}) == 1
    assert len({r.text for r in own}) == 3
    stats = run_magpie({"name": "magpie-vllm", "count": 8, "backend": "vllm",
                        "instruction": {"max_new_tokens": 64}, "response": {"max_new_tokens": 64}}, tmp_path, backend=backend)  # fmt: skip
    assert stats["rows_in"] == 8 and stats["backend"] == "vllm"
    assert MixStore(tmp_path).read()["messages"].list.len().min() >= 2
