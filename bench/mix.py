"""Benchmark: mixing and topic classification on 100k preference rows built from real prompts.

Prints one JSON object. Baselines, measured in the same run:
- mixing: plain polars `sample(n, seed)` per source, concatenated, then a random train/test split with
  `sample(fraction=...)`; what one writes without draw records, upsampling or stratification.
- topics: the same rules applied row by row with Python's `re` (compiled patterns), the usual way such rules
  are written; ours runs them as polars expressions.

    .venv/bin/python bench/mix.py [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import polars as pl

from alignmix.pipeline.mixing import mix_sources
from alignmix.pipeline.recipe import MixSpec
from alignmix.pipeline.topics import CATEGORIES, STRONG, WEAK, category_expr

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_prompts() -> list[str]:
    lines = (SHARED / "ultrafeedback" / "eval_clean.jsonl").read_text(encoding="utf-8").split("\n")
    prompts = [json.loads(line)["prompt"] for line in lines if line.strip()]
    prompts += [r["instruction"] for r in json.loads((SHARED / "llama_factory" / "alpaca_en_demo.json").read_text())]
    return prompts


def synthetic_source(name: str, n: int, prompts: list[str]) -> pl.DataFrame:
    idx = pl.int_range(0, n, eager=True)
    base = pl.Series([prompts[i % len(prompts)] for i in range(n)])
    msg = lambda role, text: pl.struct(pl.lit(role).alias("role"), text.alias("content"))  # noqa: E731
    return pl.DataFrame({"i": idx, "p": base}).select(
        pl.col("p").alias("prompt"),
        pl.concat_list(msg("user", pl.col("p")), msg("assistant", pl.lit("a good answer"))).alias("chosen"),
        pl.concat_list(msg("user", pl.col("p")), msg("assistant", pl.lit("a bad answer"))).alias("rejected"),
        pl.lit(8.0).alias("score_chosen"),
        pl.lit(3.0).alias("score_rejected"),
        (pl.lit(name + "-") + pl.col("i").cast(pl.String)).alias("id"),
        pl.lit(name).alias("source"),
        pl.col("i").cast(pl.String).alias("source_id"),
        pl.lit("{}").alias("meta"),
    )


def classify_python(texts: list[str]) -> list[str]:
    strong = [(c, re.compile(STRONG[c])) for c in CATEGORIES if c in STRONG]
    weak = [(c, re.compile(WEAK[c])) for c in CATEGORIES if c in WEAK]
    out = []
    for t in texts:
        t = t.lower()
        cat = next((c for c, rx in strong if rx.search(t)), None) or next((c for c, rx in weak if rx.search(t)), "other")
        out.append(cat)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    prompts = real_prompts()
    n = args.rows
    sources = {"a": synthetic_source("a", n // 2, prompts), "b": synthetic_source("b", n // 4, prompts[::-1]),
               "c": synthetic_source("c", n // 4, prompts[1:])}
    spec = MixSpec.model_validate({"sources": {"a": {"fraction": 0.8}, "b": {"count": n // 5},
                                               "c": {"count": n // 2, "upsample": True}}, "test_fraction": 0.05})
    wanted = {"a": int(round(0.8 * (n // 2))), "b": n // 5, "c": n // 2}

    texts = pl.concat(list(sources.values()))["prompt"]
    start = time.perf_counter()
    ours_topics = pl.DataFrame({"t": texts}).select(category_expr(pl.col("t")))["category"].to_list()
    topics_ours_s = time.perf_counter() - start
    start = time.perf_counter()
    base_topics = classify_python(texts.to_list())
    topics_base_s = time.perf_counter() - start
    assert ours_topics == base_topics, "the two implementations of the rules disagree"

    # Categories are computed once above; the mix reuses them, as it does when a frame already has them.
    with_cats = {k: v.with_columns(category_expr(pl.col("prompt"))) for k, v in sources.items()}
    start = time.perf_counter()
    result = mix_sources(with_cats, spec, seed=1)
    mix_ours_s = time.perf_counter() - start

    start = time.perf_counter()
    parts = [with_cats[k].sample(n=wanted[k], with_replacement=wanted[k] > with_cats[k].height, seed=1)
             for k in sorted(with_cats)]
    mixed = pl.concat(parts)
    test = mixed.sample(fraction=0.05, seed=1)
    train = mixed.join(test.select("id"), on="id", how="anti")
    mix_base_s = time.perf_counter() - start

    print(json.dumps({
        "rows_in": n,
        "rows_out": result.stats["rows"]["total"],
        "mix": {"ours_s": round(mix_ours_s, 3), "baseline": "polars sample per source + sample split",
                "baseline_s": round(mix_base_s, 3), "baseline_rows_out": train.height + test.height,
                "ours_rows_per_s": round(result.stats["rows"]["total"] / mix_ours_s)},
        "topics": {"ours_s": round(topics_ours_s, 3), "baseline": "same rules, per-row Python re",
                   "baseline_s": round(topics_base_s, 3), "speedup": round(topics_base_s / topics_ours_s, 2),
                   "ours_rows_per_s": round(n / topics_ours_s)},
    }, indent=2))


if __name__ == "__main__":
    main()
