"""Generation throughput and the Self-Instruct ROUGE-L filter, each against a named baseline in the same run.

1. MAGPIE instruction generation with the default model (SmolLM2-135M-Instruct): the same pre-query prompts, the
   same sampling settings (temperature 1.0, top_p 1.0, max_new_tokens, stop at end-of-turn), through
   - alignmix's transformers backend (batched, left padding, KV cache, finished rows leave the batch), and
   - a plain one-prompt-at-a-time `model.generate` loop (the baseline),
   Figure: completion tokens per second of wall time (model loading excluded, one warm-up call each).
   With `--backend vllm` (in .venv-vllm: `make bench-vllm`): alignmix's vLLM backend against a bare
   `vllm.LLM.generate` on the same engine, the same prompts and the same per-request sampling and seeds
   (target: the backend keeps at least 90% of raw vLLM's tokens/s).
2. The ROUGE-L near-duplicate filter at tens of thousands of kept instructions: ms per new instruction for
   `RougeFilter.scores` against a per-pair Python LCS (the algorithm of rouge_score's `_score_lcs`, which the
   reference Self-Instruct code maps over every kept instruction), on the same instructions. Kept instructions
   are built from the 999 real Alpaca instructions in ../shared/data by splicing the first half of one onto the
   second half of another (real vocabulary and lengths, distinct texts).

    .venv/bin/python bench/generate.py [--prompts 32] [--max-new-tokens 64] [--kept 20000]
    .venv-vllm/bin/python bench/generate.py --backend vllm [--prompts 64] [--skip-rouge]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"


def magpie_requests(backend, n: int, max_new_tokens: int):
    from alignmix.synth.backends import GenerationRequest, SamplingParams, request_seed
    from alignmix.synth.magpie import chat_format

    fmt = chat_format(backend)
    prefix = fmt.pre_query()
    return fmt, [
        GenerationRequest(prompt=prefix, params=SamplingParams(max_new_tokens, 1.0, 1.0, 0, fmt.instruction_stops, request_seed(0, "bench", i)))
        for i in range(n)
    ]


def bench_ours(backend, reqs) -> dict:
    backend.generate(reqs[:2])  # warm-up
    start = time.perf_counter()
    results = backend.generate(reqs)
    seconds = time.perf_counter() - start
    tokens = sum(r.completion_tokens for r in results)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "batch_size": backend.batch_size, "texts": [r.text for r in results]}  # fmt: skip


def bench_plain_loop(backend, reqs, stops) -> dict:
    """The baseline: `model.generate` per prompt, sampling with the same settings and a per-prompt seed."""
    import torch

    tok, model = backend.tokenizer, backend.lm
    eos = sorted(backend.eos_ids)

    def one(req):
        ids = tok(req.prompt, return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(req.params.seed)
        out = model.generate(**ids, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=req.params.max_new_tokens,
                             eos_token_id=eos, pad_token_id=backend.pad_id, stop_strings=list(stops), tokenizer=tok)  # fmt: skip
        new = [t for t in out[0, ids["input_ids"].shape[1] :].tolist() if t not in backend.eos_ids]
        return len(new), tok.decode(new, skip_special_tokens=False)

    one(reqs[0])  # warm-up
    start = time.perf_counter()
    outs = [one(r) for r in reqs]
    seconds = time.perf_counter() - start
    tokens = sum(n for n, _ in outs)
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2), "texts": [t for _, t in outs]}


def _cut(text: str, stops) -> str:
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


def bench_vllm(prompts: int, max_new_tokens: int) -> dict:
    """alignmix's VLLMBackend.generate against a bare `LLM.generate` on its own engine, the same requests."""
    import torch
    from vllm import SamplingParams as VLLMSamplingParams

    from alignmix.synth.backends import get_backend

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    options = {} if torch.cuda.is_available() else {"max_model_len": 1024, "enforce_eager": True}
    backend = get_backend({"backend": "vllm", "model": "default", **options})
    started = time.perf_counter()
    backend.load()
    load_s = time.perf_counter() - started
    fmt, reqs = magpie_requests(backend, prompts, max_new_tokens)

    def bare(rs):
        params = [VLLMSamplingParams(n=1, max_tokens=r.params.max_new_tokens, temperature=r.params.temperature,
                                     top_p=r.params.top_p, top_k=-1, stop=list(r.params.stop) or None,
                                     seed=r.params.seed) for r in rs]  # fmt: skip
        return backend.llm.generate([r.prompt for r in rs], sampling_params=params, use_tqdm=False)

    bare(reqs[:2])  # warm-up
    start = time.perf_counter()
    outs = bare(reqs)
    seconds = time.perf_counter() - start
    tokens = sum(len(o.outputs[0].token_ids) for o in outs)
    raw = {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2)}
    ours = bench_ours(backend, reqs)
    same = sum(a == o.outputs[0].text for a, o in zip(ours.pop("texts"), outs))
    ours.pop("batch_size")
    return {
        "engine": {"vllm": __import__("vllm").__version__, "device": "cuda" if torch.cuda.is_available() else "cpu",
                   "options": options, "load_s": round(load_s, 1)},  # fmt: skip
        "prompts": prompts,
        "max_new_tokens": max_new_tokens,
        "alignmix_vllm_backend": ours,
        "baseline_bare_llm_generate": raw,
        "share_of_raw_tokens_per_s": round(ours["tokens_per_s"] / raw["tokens_per_s"], 3),
        "texts_identical_to_baseline": f"{same} of {len(reqs)}",
    }


def _python_lcs_fmeasure(a: list[str], b: list[str]) -> float:
    """rouge_score's `_score_lcs`: the O(n*m) table in Python."""
    if not a or not b:
        return 0.0
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    lcs = table[-1][-1]
    p, r = lcs / len(b), lcs / len(a)
    return 2 * p * r / (p + r) if p + r else 0.0


def bench_rouge(kept_n: int, probes_n: int, baseline_probes: int) -> dict:
    from alignmix.synth.rouge import RougeFilter, rouge_tokens

    alpaca = json.loads((SHARED / "llama_factory" / "alpaca_en_demo.json").read_text())
    base = [r["instruction"].split() for r in alpaca if len(r["instruction"].split()) >= 4]
    rng = random.Random(0)
    texts: set[str] = set()
    while len(texts) < kept_n + probes_n:
        a, b = rng.choice(base), rng.choice(base)
        texts.add(" ".join(a[: len(a) // 2] + b[len(b) // 2 :]))
    texts_l = sorted(texts)
    rng.shuffle(texts_l)
    kept, probes = texts_l[:kept_n], texts_l[kept_n:]
    start = time.perf_counter()
    f = RougeFilter(kept)
    build = time.perf_counter() - start
    start = time.perf_counter()
    ours = [float(f.scores(p).max()) for p in probes]
    ours_s = (time.perf_counter() - start) / len(probes)
    kept_tokens = [rouge_tokens(t) for t in kept]
    start = time.perf_counter()
    ref = [max(_python_lcs_fmeasure(rouge_tokens(p), k) for k in kept_tokens) for p in probes[:baseline_probes]]
    ref_s = (time.perf_counter() - start) / baseline_probes
    # The filter only skips pairs whose length bound is under the threshold, so the maxima above it agree.
    agree = all((o > 0.7) == (r > 0.7) and (r <= 0.7 or abs(o - r) < 1e-12) for o, r in zip(ours, ref))
    return {
        "kept_instructions": kept_n,
        "probes": len(probes),
        "alignmix_ms_per_instruction": round(ours_s * 1000, 3),
        "alignmix_build_s": round(build, 3),
        "baseline": "per-pair Python LCS (rouge_score's _score_lcs algorithm)",
        "baseline_probes": baseline_probes,
        "baseline_ms_per_instruction": round(ref_s * 1000, 3),
        "speedup": round(ref_s / ours_s, 1),
        "decisions_agree": agree,
        "share_above_0.7": round(sum(o > 0.7 for o in ours) / len(ours), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--kept", type=int, default=20_000)
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--baseline-probes", type=int, default=5)
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--skip-rouge", action="store_true")
    ap.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                    help="vllm: the vLLM backend against bare vLLM (run it where vllm imports, e.g. .venv-vllm)")
    args = ap.parse_args()
    import torch

    from alignmix.synth.backends import get_backend

    report: dict = {
        "bench": "generate",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "cpus": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS")},  # fmt: skip
    }
    if args.backend == "vllm" and not args.skip_generation:
        report["vllm_generation"] = bench_vllm(args.prompts, args.max_new_tokens)
    elif not args.skip_generation:
        backend = get_backend({"backend": "transformers", "model": "default", "batch_size": args.batch_size})
        backend.load()
        fmt, reqs = magpie_requests(backend, args.prompts, args.max_new_tokens)
        ours = bench_ours(backend, reqs)
        plain = bench_plain_loop(backend, reqs, fmt.instruction_stops)
        # Same seeds and the same sampling arithmetic: where batching leaves the logits bit-identical, the texts
        # match the one-at-a-time loop exactly (the baseline's texts are cut at the stop string, as ours are).
        ours_texts, plain_texts = ours.pop("texts"), plain.pop("texts")
        same = sum(a == _cut(b, fmt.instruction_stops) for a, b in zip(ours_texts, plain_texts))
        ours["sample"] = [t.strip()[:120] for t in ours_texts[:5]]
        report["magpie_generation"] = {
            "model": "SmolLM2-135M-Instruct (default)",
            "prompts": args.prompts,
            "max_new_tokens": args.max_new_tokens,
            "pre_query_template": fmt.pre_query(),
            "alignmix_transformers_batched": ours,
            "baseline_plain_generate_loop": plain,
            "speedup": round(ours["tokens_per_s"] / plain["tokens_per_s"], 2),
            "texts_identical_to_baseline": f"{same} of {len(reqs)}",
        }
    if not args.skip_rouge:
        report["rouge_filter"] = bench_rouge(args.kept, args.probes, args.baseline_probes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
