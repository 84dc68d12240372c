"""Does curation pay? DPO from the same start on the same source twice, raw (as ingested) and curated (the default
curation stages of recipes/ultrafeedback-mix.yaml), with the same steps, batches and seeds, evaluated on the same
held-out clean pairs. The raw arm is the named baseline.

Source: real preference pairs, UltraFeedback (ultrafeedback/eval_clean.jsonl) and HH-RLHF (hh_rlhf/test_prefs.jsonl)
from the data folder, ingested by alignmix. Held out: pairs that survive curation (clean), picked by a seeded
hash, with every pair sharing their prompt removed from both training sets. Per arm and seed (`train_dpo`, LoRA):

    pref_accuracy   how often the implicit reward beta * (log pi - log pi_ref) ranks chosen over rejected on the
                    held-out pairs (training/evaluate.py; 0.5 before training)
    margin          the mean implicit-reward margin on the same pairs
    win_rate        the judge's verdicts on the trained model's greedy answers to held-out prompts against the start
                    model's answers (both orders for the LLM judge; a tie, an order-dependent verdict or an identical
                    answer counts one half)

and, per seed, `curated_vs_raw`: the curated model's answers judged against the raw model's. Means, sample
standard deviations, min and max over the seeds. The product's goal: curated beats raw with at most 60% of its rows.

    .venv/bin/python bench/curation_value.py --quick                       # CPU, under 15 minutes on 2 cores
    .venv/bin/python bench/curation_value.py --merge seed0.json seed1.json seed2.json   # runs with --seeds 0, 1, 2
    .venv/bin/python bench/curation_value.py --model Qwen/Qwen2.5-0.5B-Instruct \\
        --judge '{"kind": "reward_model", "model": "Skywork/Skywork-Reward-V2-Qwen3-0.6B"}'   # full mode, on a GPU
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import polars as pl  # noqa: E402

from alignmix.filters.apply import curate  # noqa: E402
from alignmix.filters.registry import build_stage  # noqa: E402
from alignmix.pipeline.ingest import ingest_source  # noqa: E402
from alignmix.pipeline.recipe import SourceSpec, load_recipe  # noqa: E402
from alignmix.pipeline.store import MixStore, write_json, write_shards  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SOURCES = {"ultrafeedback": "ultrafeedback/eval_clean.jsonl", "hh_rlhf": "hh_rlhf/test_prefs.jsonl"}
RECIPE = ROOT / "alignmix" / "recipes" / "ultrafeedback-mix.yaml"
ARMS = ("raw", "curated")
# quick: small enough for 6 CPU runs of the 135M default model in under 15 minutes on 2 cores.
MODES = {
    "quick": {"steps": 4, "heldout": 16, "generations": 2, "max_new_tokens": 16, "max_length": 128, "batch_size": 2},
    "full": {
        "steps": 200,
        "heldout": 200,
        "generations": 64,
        "max_new_tokens": 256,
        "max_length": 1024,
        "batch_size": 8,
    },
}
LEARNING_RATE = {"quick": 1e-4, "full": 5e-6}  # quick: few steps, so a rate that moves the LoRA in them


def ingest(data_dir: Path, work: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Every source through alignmix's ingest (format detected), as the pipeline would read it."""
    frames, counts = [], {}
    for name, rel in SOURCES.items():
        path = data_dir / rel
        if not path.exists():
            raise SystemExit(f"{path} is missing: give --data, a folder holding {', '.join(SOURCES.values())}")
        stats = ingest_source(SourceSpec(name=name, path=str(path)), work / "sources" / name)
        frames.append(MixStore(work / "sources" / name).read())
        counts[name] = {"rows_in": stats["rows_in"], "rows": frames[-1].height, "dropped": stats.get("dropped", {})}
    return pl.concat(frames, how="diagonal_relaxed"), counts


def curate_rows(raw: pl.DataFrame, work: Path) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The recipe's curation stages, in order, over the raw rows."""
    stages = [build_stage(spec) for spec in load_recipe(RECIPE).curation]
    stats = curate(raw, work / "curated", stages)
    report = {s.stage: {"rows_in": s.rows_in, "kept": s.rows_kept, "dropped": s.dropped} for s in stats}
    return MixStore(work / "curated").read(), report


def _rank(row_id: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).hexdigest()


def prompt_tokens(rows: pl.DataFrame, model: str) -> list[int]:
    """Tokens of each pair's prompt turns through the model's chat template (what training counts against
    max_length)."""
    from transformers import AutoTokenizer

    from alignmix.pipeline.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model(model))
    texts = [
        tok.apply_chat_template(c[:-1], add_generation_prompt=True, tokenize=False) for c in rows["chosen"].to_list()
    ]
    return [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]


def hold_out(
    raw: pl.DataFrame, curated: pl.DataFrame, n: int, seed: int, max_prompt_tokens: int, model: str
) -> tuple[pl.DataFrame, dict[str, pl.DataFrame]]:
    """`n` curated pairs whose prompt leaves half of max_length to the answers (so every one is scored), each
    source's share of them picked in seeded hash order; and each arm's training rows without any pair that shares
    a prompt with them."""
    fits = curated.filter(pl.Series(prompt_tokens(curated, model)) <= max_prompt_tokens)
    ranked = fits.with_columns(pl.col("id").map_elements(lambda i: _rank(i, seed), return_dtype=pl.String).alias("_r"))
    shares = ranked["source"].value_counts(sort=True).rows()
    heldout = pl.concat([ranked.filter(pl.col("source") == s).sort("_r").head(round(n * c / ranked.height))
                         for s, c in shares]).sort("_r").drop("_r")  # fmt: skip
    prompts = heldout["prompt"].to_list()
    train = {arm: rows.filter(~pl.col("prompt").is_in(prompts)) for arm, rows in zip(ARMS, (raw, curated))}
    # Shuffled (seeded): each run reads the first 4 x steps x batch rows (room for those set aside as too long),
    # a sample of its whole arm.
    train = {arm: rows.sort(pl.col("id").map_elements(lambda i: _rank(i, seed), return_dtype=pl.String))
             for arm, rows in train.items()}  # fmt: skip
    return heldout, train


def write_mix(root: Path, train: pl.DataFrame, test: pl.DataFrame) -> Path:
    store = MixStore(root)
    write_shards(train, store.data_dir, "train")
    write_shards(test, store.data_dir, "test")
    write_json(store.manifest_path, {"recipe": {"name": root.name}})
    return root


def dpo_config(args: argparse.Namespace, seed: int, heldout: int) -> Any:
    from alignmix.training import load_config

    return load_config("dpo", overrides={
        "model": args.model, "seed": seed, "max_steps": args.steps, "batch_size": args.batch_size,
        "max_length": args.max_length, "learning_rate": args.lr, "beta": args.beta, "eval_rows": heldout,
        "generations": args.generations, "max_new_tokens": args.max_new_tokens, "logging_steps": args.steps,
        "save_steps": 100_000, "resume": False, "max_train_rows": 4 * args.steps * args.batch_size, "gradient_checkpointing": False,  # memory is no concern at these sizes
    })  # fmt: skip


def train_arm(mix: Path, out: Path, cfg: Any) -> dict[str, Any]:
    from alignmix.training import train_dpo

    started = time.perf_counter()
    result = train_dpo(mix, out, cfg)
    after = result["eval"]["after"]
    return {
        "heldout_scored": after["pairs"],
        "pref_accuracy": after["reward_accuracy"],
        "margin": after["reward_margin"],
        "logp_accuracy": after["logp_accuracy"],
        "rows_used": result["train"]["rows"],
        "seconds": round(time.perf_counter() - started, 1),
        "generations": result["generations"],
    }


def instruction(turns: list[dict[str, Any]]) -> str:
    """What the judge reads as the instruction: the user turn, or the whole transcript of a multi-turn prompt."""
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"{t['role'].capitalize()}: {t['content']}" for t in turns)


def judge_runs(spec: dict[str, Any], runs: dict[int, dict[str, dict[str, Any]]], heldout: pl.DataFrame) -> None:
    """Win rates per seed: each arm's answers against the start model's, and curated against raw (one judge load).
    train_dpo generates for the first test rows in order, so generation i answers held-out pair i's prompt."""
    from alignmix.synth.config import PreferencesConfig
    from alignmix.synth.judge import make_judge, win_rate

    judge = make_judge(PreferencesConfig.model_validate({"judge": spec}).judge)
    turns = [c[:-1] for c in heldout["chosen"].to_list()]
    prompts, last = [instruction(t) for t in turns], [t[-1]["content"] for t in turns]
    for arms in runs.values():
        gens = {arm: arms[arm].pop("generations") for arm in ARMS}
        for arm in ARMS:
            assert [g["prompt"] for g in gens[arm]] == last[: len(gens[arm])], "generations follow the test rows"
            arms[arm]["win"] = win_rate(
                judge.outcomes([(p, g["after"], g["before"]) for p, g in zip(prompts, gens[arm])])
            )
            arms[arm]["win_rate"] = arms[arm]["win"]["win_rate"]
            arms[arm]["answers_changed"] = sum(g["after"] != g["before"] for g in gens[arm])
        head = [(p, c["after"], r["after"]) for p, c, r in zip(prompts, gens["curated"], gens["raw"])]
        arms["curated_vs_raw"] = win_rate(judge.outcomes(head))


def spread(values: list[float | None]) -> dict[str, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None}
    std = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return {"mean": round(statistics.fmean(vals), 4), "std": round(std, 4), "min": min(vals), "max": max(vals)}


METRICS = ("pref_accuracy", "margin", "win_rate", "logp_accuracy")


def summarize(arm: str, rows: int, runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    per_seed = [{"seed": s, **{k: v for k, v in r[arm].items()}} for s, r in runs.items()]
    spreads = {m: spread([p[m] for p in per_seed]) for m in METRICS}
    return {"rows": rows, **{m: spreads[m]["mean"] for m in METRICS}, "spread": spreads, "per_seed": per_seed}


def versus_raw(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {"win_rate": spread([r["curated_vs_raw"]["win_rate"] for r in runs.values()]),
            "per_seed": [{"seed": s, **r["curated_vs_raw"]} for s, r in runs.items()]}  # fmt: skip


def merge(paths: list[Path]) -> dict[str, Any]:
    """One report from reports of the same settings run with different --seeds (one process per seed, say)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    runs: dict[int, dict[str, Any]] = {}
    for r in reports:
        for arm in (*ARMS, "curated_vs_raw"):
            for entry in r[arm]["per_seed"]:
                runs.setdefault(entry["seed"], {})[arm] = {k: v for k, v in entry.items() if k != "seed"}
    runs = dict(sorted(runs.items()))
    out = {**reports[0], "curated_vs_raw": versus_raw(runs), "merged_from": [str(p) for p in paths]}
    for arm in ARMS:
        out[arm] = summarize(arm, out[arm]["rows"], runs)
    out["settings"] = {**out["settings"], "seeds": list(runs)}
    for key in ("seconds", "load_average_1m", "work"):
        out[key] = [r[key] for r in reports]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU sizes (under 15 minutes on 2 cores)")
    p.add_argument("--data", type=Path, default=DATA, help="the folder holding the real data (see SOURCES.md)")
    p.add_argument("--model", default="default", help="the start policy (and reference) of both arms")
    p.add_argument("--judge", default='{"model": "default"}', help="the judge section (JSON) for the win rates")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument(
        "--lr", type=float, default=None, help=f"full: {LEARNING_RATE['full']}; quick: {LEARNING_RATE['quick']}"
    )
    p.add_argument("--beta", type=float, default=0.1)
    for key, value in MODES["full"].items():
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"full: {value}; quick: "
                       f"{MODES['quick'][key]}")  # fmt: skip
    p.add_argument("--out", type=Path, default=None, help="work folder (default: a new temporary one)")
    p.add_argument("--merge", type=Path, nargs="+", help="print one report from these reports (one per seed)")
    args = p.parse_args()
    if args.merge:
        print(json.dumps(merge(args.merge), indent=2))
        return
    mode = "quick" if args.quick else "full"
    for key, value in {**MODES[mode], "lr": LEARNING_RATE[mode]}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    started = time.perf_counter()
    work = args.out or Path(tempfile.mkdtemp(prefix="alignmix-bench-curation-"))

    raw, source_counts = ingest(args.data, work)
    curated, curation = curate_rows(raw, work)
    heldout, train = hold_out(raw, curated, args.heldout, 0, args.max_length // 2, args.model)
    mixes = {arm: write_mix(work / f"mix-{arm}", train[arm], heldout) for arm in ARMS}
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[int, dict[str, dict[str, Any]]] = {}
    judge_spec = json.loads(args.judge)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its log lines: stdout is the JSON alone
        for seed in seeds:
            cfg = dpo_config(args, seed, heldout.height)
            runs[seed] = {arm: train_arm(mixes[arm], work / f"dpo-{arm}-{seed}", cfg) for arm in ARMS}
        judge_runs(judge_spec, runs, heldout)

    raw_rows, cur_rows = train["raw"].height, train["curated"].height
    out = {
        "bench": "curation_value",
        "mode": "quick" if args.quick else "full",
        "baseline": "raw: the same DPO on the rows as ingested",
        "sources": source_counts,
        "curation": curation,
        "heldout_pairs": heldout.height,
        "raw": summarize("raw", raw_rows, runs),
        "curated": summarize("curated", cur_rows, runs),
        "curated_vs_raw": versus_raw(runs),
        "rows_ratio": round(cur_rows / raw_rows, 4) if raw_rows else None,
        "settings": {"model": args.model, "judge": judge_spec, "seeds": seeds, "steps": args.steps,
                     "batch_size": args.batch_size, "max_length": args.max_length, "lr": args.lr, "beta": args.beta,
                     "generations": args.generations, "max_new_tokens": args.max_new_tokens},
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "work": str(work),
    }  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
