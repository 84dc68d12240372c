"""The vLLM backend for real, on the default model: MAGPIE, responses and the `expected` judge rating through
vLLM's logprobs, per-request seeds, prompts passed as token ids (one BOS, not two), and one engine at a time.

These run wherever vllm imports: on CPU through vllm-cpu in `.venv-vllm` (`make test-vllm`, which `.ci/run`
runs), on a GPU through vllm. Elsewhere they skip. vLLM on CPU sizes its KV cache from VLLM_CPU_KVCACHE_SPACE
(GiB), not from gpu_memory_utilization; 1 GiB holds far more than these few short requests need.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import shutil
import weakref
from pathlib import Path

import orjson
import pytest

from alignmix.pipeline.models import resolve_model
from alignmix.pipeline.store import MixStore
from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend, resident_backend

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (make test-vllm)"),
]

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
# Small requests, short prompts: a 1024-token context keeps the CPU engine's buffers small; eager mode skips the
# torch.compile warm-up, which on 2 CPU cores takes minutes and is not what these tests are about.
OPTIONS = {"gpu_memory_utilization": 0.3, "max_model_len": 1024, "enforce_eager": True, "dtype": "float32"}
# float32: vLLM-CPU's default bf16 is not batch-invariant on a CPU with AMX (its GEMMs round by matrix shape), so
# three identical seeded requests in one batch sampled two different texts, and a LoRA probability moved by 0.027
# from the float32 reference. These tests are about the backend, not bf16 numerics.
SPEC = {"backend": "vllm", "model": "default", "batch_size": 16, **OPTIONS}
PRE_QUERY = "<|im_start|>user\n"  # SmolLM2's pre-query template; <|im_start|> is also its BOS token


@pytest.fixture(scope="module")
def backend():
    b = get_backend(SPEC)
    b.load()
    return b


def test_per_request_seeds_give_distinct_samples_and_the_same_text_on_a_second_run(backend):
    def sample(seeds):
        reqs = [GenerationRequest(prompt=PRE_QUERY, params=SamplingParams(max_new_tokens=16, seed=s)) for s in seeds]
        return [r.text for r in backend.generate(reqs)]

    first = sample([1, 2, 3, 4])
    assert len(set(first)) == 4  # one seed per request: four different instructions
    assert sample([1, 2, 3, 4]) == first  # the same seeds: the same texts, call after call
    assert sample([3, 1]) == [first[2], first[0]]  # a request's text depends on its seed, not its batch
    assert len(set(sample([7, 7, 7]))) == 1


def test_progress_reports_each_request_as_it_finishes_then_the_tokens(backend):
    calls: list[tuple[int, int]] = []
    reqs = [GenerationRequest(prompt=PRE_QUERY, params=SamplingParams(max_new_tokens=8 * (1 + i), seed=i)) for i in range(4)]
    results = backend.generate(reqs, progress=lambda n, tokens: calls.append((n, tokens)))
    assert calls[:-1] == [(1, 0)] * 4  # one call per finished request, while the engine runs
    assert calls[-1] == (0, sum(r.completion_tokens for r in results))


def test_prompts_go_in_as_token_ids_without_added_special_tokens(backend):
    ids = backend.tokenizer(PRE_QUERY, add_special_tokens=False)["input_ids"]
    res = backend.generate([GenerationRequest(prompt=PRE_QUERY, params=SamplingParams(max_new_tokens=4, seed=1))])
    assert res[0].prompt_tokens == len(ids) == 3
    chat = [{"role": "user", "content": "What is 2 + 2?"}]
    rendered = backend.render_chat(chat)
    res = backend.generate([GenerationRequest(messages=chat, params=SamplingParams(max_new_tokens=4, seed=1))])
    assert res[0].prompt_tokens == len(backend.tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_magpie_on_vllm_writes_rows_and_a_second_run_repeats_them(backend, tmp_path):
    from alignmix.synth.magpie import run_magpie

    spec = {"name": "magpie-vllm", "count": 8, "seed": 3, "backend": "vllm", "backend_options": OPTIONS,
            "instruction": {"max_new_tokens": 48}, "response": {"max_new_tokens": 48}}  # fmt: skip
    # Each run starts from an empty prefix cache, as a new `alignmix build` process does: with the first run's
    # blocks cached, the second prefills only the rest (in bf16 on an AMX CPU that alone changed sampled tokens).
    backend.llm.reset_prefix_cache()
    stats = run_magpie(spec, tmp_path / "a", backend=backend)
    backend.llm.reset_prefix_cache()
    again = run_magpie(spec, tmp_path / "b", backend=backend)
    assert stats["rows_in"] == 8 and stats["backend"] == "vllm"
    kept = MixStore(tmp_path / "a").read()
    assert kept.height == stats["rows_kept"] == 8 - sum(stats["dropped"].values())
    assert all(n >= 2 for n in kept["messages"].list.len().to_list())
    assert MixStore(tmp_path / "b").read()["messages"].to_list() == kept["messages"].to_list()
    # The 135M model often runs past the token cap (on an AVX2 CPU all 8 did): rejected rows are written with their
    # reason, one per dropped conversation, and a second run repeats them as well.
    import polars as pl

    def rejected(run: str) -> list[tuple[str, str]]:
        path = MixStore(tmp_path / run).rejected_path("magpie")
        return pl.read_parquet(path).select("drop_reason", "text").rows() if path.exists() else []

    assert len(rejected("a")) == sum(stats["dropped"].values())
    assert rejected("b") == rejected("a")


def test_responses_and_expected_ratings_through_vllm_logprobs(backend, tmp_path):
    from alignmix.synth import build_preferences

    spec = {
        "responders": [{"temperature": 0.7, "max_new_tokens": 16, "backend": "vllm", "backend_options": OPTIONS},
                       {"temperature": 1.3, "max_new_tokens": 16, "backend": "vllm", "backend_options": OPTIONS}],
        "judge": {"rating": "expected", "aspects": ["helpfulness"], "max_new_tokens": 8, "backend": "vllm",
                  "backend_options": OPTIONS},
        "binarize": {"rejected": "lowest"},
    }  # fmt: skip
    prompts = ["Name a large river in Europe.", "What is 2 + 2?", "Give one tip for sleeping well."]
    stats = build_preferences(prompts, spec, tmp_path / "prefs")
    assert resident_backend() is backend  # responders and judge shared the one engine
    assert stats["responses"]["rows_in"] == 6
    assert stats["judge"]["counters"]["unparseable"] == 0
    b = stats["binarize"]
    assert b["pairs"] == b["rows_kept"] == 3 - sum(b["dropped"].values()) >= 1
    for row in MixStore(tmp_path / "prefs").read().iter_rows(named=True):
        meta = orjson.loads(row["meta"])
        assert row["score_chosen"] > row["score_rejected"]
        assert row["score_chosen"] == meta["chosen"]["rating"] == meta["chosen"]["ratings"]["helpfulness"]
        # A probability-weighted rating, not a parsed digit.
        assert 1.0 <= row["score_rejected"] < row["score_chosen"] <= 5.0 and row["score_chosen"] % 1 != 0


def test_expected_ratings_match_the_transformers_backend(backend):
    """vLLM's top-20 logprobs and the transformers backend's full softmax give the same digit probabilities."""
    from alignmix.synth.backends.transformers import TransformersBackend
    from alignmix.synth.config import JudgeConfig
    from alignmix.synth.judge import Judge, rating_candidates

    judge = Judge(JudgeConfig(rating="expected"), backend)
    prompts = [judge._prefilled("Rate this answer to 'What is 2 + 2?': '4'", "Rating: ")]
    ours = backend.next_token_probs(prompts, rating_candidates())[0]
    reference = TransformersBackend("default", dtype="float32", device="cpu")
    theirs = reference.next_token_probs(prompts, rating_candidates())[0]
    reference.release()
    backend.load()
    # vLLM on CPU computes in bfloat16 and its kernels differ by instruction set (AVX2 here, AVX-512 elsewhere):
    # seen 0.023 apart on an AVX2 machine, within 0.02 on an AVX-512 one.
    for digit in "12345":
        assert ours[digit] == pytest.approx(theirs[digit], abs=0.03)
    assert max(ours, key=ours.get) == max(theirs, key=theirs.get)


def test_switching_models_releases_the_engine_and_a_bos_template_gets_one_bos(backend, tmp_path):
    """A Llama-3-like tokenizer (it adds a BOS to text) and a pre-query template that starts with that BOS: the
    prompt reaches the model with one BOS. Loading that second model releases the first engine."""
    folder = tmp_path / "bos-model"
    folder.mkdir()
    source = Path(resolve_model("default"))
    for f in source.iterdir():
        if f.name != "tokenizer.json":
            (folder / f.name).symlink_to(f)
    tok = json.loads((source / "tokenizer.json").read_text())
    bos = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}
    tok["post_processor"]["single"] = [bos, *tok["post_processor"]["single"]]
    bos_id = backend.tokenizer.convert_tokens_to_ids("<|im_start|>")
    tok["post_processor"]["special_tokens"] = {"<|im_start|>": {"id": "<|im_start|>", "ids": [bos_id], "tokens": ["<|im_start|>"]}}
    (folder / "tokenizer.json").write_text(json.dumps(tok))

    first_engine = weakref.ref(backend.llm)
    other = get_backend({**SPEC, "model": str(folder)})
    res = other.generate([GenerationRequest(prompt=PRE_QUERY, params=SamplingParams(max_new_tokens=4, seed=1))])
    gc.collect()
    assert resident_backend() is other and backend.llm is None
    assert first_engine() is None  # the first engine's LLM object is gone, not just uncached
    with_special = other.tokenizer(PRE_QUERY)["input_ids"]
    assert with_special[:2] == [bos_id, bos_id]  # what a text prompt would have become: two BOS
    assert res[0].prompt_tokens == len(with_special) - 1 == 3
    other.release()
    shutil.rmtree(folder)


def test_a_lora_adapter_goes_through_enable_lora_and_a_lora_request(backend, tmp_path):
    """Iterative DPO samples from base + adapter: vLLM serves the base with `enable_lora` and each request carries
    a `LoRARequest`. Its next-token probabilities match peft's (transformers, adapter merged) and differ from the
    base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignmix.synth.backends.transformers import TransformersBackend

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("default"), dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.15)
    lora.save_pretrained(tmp_path / "adapter")
    del lora, base
    prompts = [backend.render_chat([{"role": "user", "content": "Rate the answer '4' to 'What is 2 + 2?' from 1 to 5."}])
               + "Rating: "]
    candidates = list("12345")
    plain = backend.next_token_probs(prompts, candidates)[0]
    tuned = get_backend({**SPEC, "adapter": str(tmp_path / "adapter")})
    ours = tuned.next_token_probs(prompts, candidates)[0]
    assert tuned.llm.llm_engine.vllm_config.lora_config.max_lora_rank == 8
    assert tuned.describe()["adapter"] == str(tmp_path / "adapter")
    tuned.release()
    reference = TransformersBackend("default", dtype="float32", device="cpu", adapter=str(tmp_path / "adapter"))
    theirs = reference.next_token_probs(prompts, candidates)[0]
    reference.release()
    for digit in candidates:
        assert ours[digit] == pytest.approx(theirs[digit], abs=0.02)
    assert sum(abs(ours[d] - plain[d]) for d in candidates) > 0.05  # the adapter changed the distribution
