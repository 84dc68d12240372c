"""One local model loaded at a time: loading a second backend releases the first (its weights are freed, not
just unreferenced by the cache), and the released one loads again when it is used again. The transformers
backend on the default model, so this runs everywhere; tests/synth/test_vllm_backend.py checks the same on vLLM."""

from __future__ import annotations

import gc
import weakref

import pytest

from alignmix.pipeline.models import resolve_model
from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend, resident_backend

pytestmark = pytest.mark.slow

GREEDY = GenerationRequest(prompt="<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
                           params=SamplingParams(max_new_tokens=6, temperature=0.0))  # fmt: skip


def test_switching_models_releases_the_previous_one():
    # Two specs of the same weights (the name and its folder) are two cache entries: two engines, as two models.
    first = get_backend({"backend": "transformers", "model": "default", "batch_size": 4})
    second = get_backend({"backend": "transformers", "model": resolve_model("default"), "batch_size": 4})
    assert first is not second
    text = first.generate([GREEDY])[0].text
    assert resident_backend() is first
    weights = weakref.ref(first.lm)

    assert second.generate([GREEDY])[0].text == text
    gc.collect()
    assert resident_backend() is second
    assert first.lm is None and not first._loaded
    assert weights() is None  # nothing else held the released model

    assert first.generate([GREEDY])[0].text == text  # loads again on use, and releases the other
    assert resident_backend() is first and second.lm is None
    assert get_backend({"backend": "transformers", "model": "default", "batch_size": 4}) is first


def test_training_releases_the_generation_model_first(tmp_path):
    from alignmix.training.config import load_config
    from alignmix.training.modeling import load_policy

    backend = get_backend({"backend": "transformers", "model": "default", "batch_size": 4})
    backend.generate([GREEDY])
    assert resident_backend() is backend
    model, _, _ = load_policy(load_config("sft", overrides=["quantize=none"]), tmp_path)
    assert resident_backend() is None and backend.lm is None
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
