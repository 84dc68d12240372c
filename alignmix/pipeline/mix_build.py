"""Building a mix directory: read sources, run curation stages, mix, write shards and record everything the
data card shows, so that the card is rendered from recorded numbers and never recomputes them.

    recipe = load_recipe("recipes/demo.yaml")
    store = MixStore(Path(out) / recipe.name)
    frames = {s.name: read_source(s, store) for s in recipe.sources}     # stats/ingest-<name>.json, rejected/
    curated = curate_frames(frames, stages, store)                       # alignmix.filters.apply: stats, rejected
    manifest = build_mix(recipe, curated, out)                           # data/, stats/mix.json, manifest.json

`stats/mix.json` holds the mix's own numbers (per-source draws, splits, topics, lengths, scores, margins)
and the tables the card needs from earlier stages (the sources table and the funnel), counted once here from
`stats/` and `rejected/`.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import yaml

import alignmix
from alignmix.pipeline.ingest import read_source  # noqa: F401  (re-exported: one source into memory)
from alignmix.pipeline.mixing import MixResult, mix_sources
from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import histogram
from alignmix.pipeline.store import MixStore, read_json, write_frame, write_shards

EXAMPLE_CHARS = 400  # how much of a row's text the card quotes
ENV_PACKAGES = ("polars", "pyarrow", "numpy", "datasets", "huggingface_hub", "matplotlib", "pydantic")


# --- the mix ------------------------------------------------------------------------------------------------


def build_mix(recipe: Recipe, curated: dict[str, pl.DataFrame], out_root: str | Path) -> dict[str, Any]:
    """Mix `curated` (source name -> kept rows) as the recipe says into `<out_root>/<recipe.name>/`; write the
    shards, `stats/mix.json`, `stats/mix-draws.parquet` and `manifest.json`; return the manifest.

    Stages that ran before (ingest, curation) must have written their stats and rejected rows into the same
    directory; their counts are gathered here into the sources table and the funnel.
    """
    start = time.perf_counter()
    store = MixStore(Path(out_root) / recipe.name)
    mix = mix_sources(curated, recipe.mix, recipe.seed)
    shards = write_shards(mix.train, store.data_dir, "train", recipe.output.rows_per_shard)
    if mix.test.height:
        shards += write_shards(mix.test, store.data_dir, "test", recipe.output.rows_per_shard)
    else:
        for stale in store.shard_files("test"):
            stale.unlink()
    write_frame(mix.draws, store.root / "stats" / "mix-draws.parquet")

    both = pl.concat([mix.train, mix.test], how="diagonal_relaxed")
    record = {
        "stage": "mix",
        "rows_in": sum(f.height for n, f in curated.items() if n in mix.stats["sources"]),
        "rows_kept": both.height,
        "dropped": {},
        "seconds": round(time.perf_counter() - start, 6),
        "distributions": mix_distributions(both),
        "config": recipe.mix.model_dump(mode="json"),
        "mix": mix.stats,
        "sources_table": sources_table(store, curated, mix),
        "funnel": funnel(store, mix),
        "examples": examples(mix),
        "rejected_examples": rejected_examples(store),
    }
    if mix.stats.get("fusion") or _any_reasoning(both):
        record["reasoning"] = reasoning_summary(both, store)
    store.write_stats("mix", record)

    recipe_json = recipe.model_dump(mode="json")
    manifest = {
        "name": recipe.name,
        "description": recipe.description,
        "license": recipe.license,
        "language": recipe.language,
        "recipe": recipe_json,
        "recipe_yaml": yaml.safe_dump(recipe.model_dump(mode="json", exclude_defaults=True), sort_keys=False),
        "recipe_hash": recipe.recipe_hash(),
        "seed": recipe.seed,
        "alignmix_version": alignmix.__version__,
        "row_kind": mix.stats["row_kind"],
        "splits": {s: sum(x["rows"] for x in shards if x["split"] == s) for s in ("train", "test") if any(
            x["split"] == s for x in shards)},
        "shards": shards,
        "environment": environment(),
    }
    store.write_manifest(manifest)
    return manifest


def environment() -> dict[str, Any]:
    versions = {}
    for name in ENV_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": sys.version.split()[0], "platform": f"{platform.system()}-{platform.machine()}",
            "packages": versions}


def _last_turn(col: str, role: str) -> pl.Expr:
    return (
        pl.col(col)
        .list.eval(pl.when(pl.element().struct.field("role") == role).then(pl.element().struct.field("content")))
        .list.drop_nulls()
        .list.last()
    )


def mix_distributions(frame: pl.DataFrame) -> dict[str, Any]:
    """Lengths (characters), scores and margins of the mix's rows, in stage.histogram()'s format.

    Preference rows: prompt, chosen and rejected response lengths, chosen/rejected length ratio, both scores and
    the margin. SFT rows: prompt and response lengths and turns per conversation. Plus languages, when a
    language-ID stage left a `lang` column, and dedup clusters, when dedup left `dup_cluster`.
    """
    if frame.is_empty():
        return {}
    if row_kind(frame) == "preference":
        m = frame.select(
            pl.col("prompt").str.len_chars().alias("prompt_chars"),
            _last_turn("chosen", "assistant").str.len_chars().alias("chosen_chars"),
            _last_turn("rejected", "assistant").str.len_chars().alias("rejected_chars"),
            pl.col("score_chosen"),
            pl.col("score_rejected"),
        ).with_columns(
            (pl.col("chosen_chars") / pl.col("rejected_chars")).alias("chosen_rejected_ratio"),
            (pl.col("score_chosen") - pl.col("score_rejected")).alias("score_margin"),
        )
        out = {
            "prompt_chars": histogram(m["prompt_chars"]),
            "chosen_chars": histogram(m["chosen_chars"]),
            "rejected_chars": histogram(m["rejected_chars"]),
            "chosen_rejected_ratio": histogram(m["chosen_rejected_ratio"].log(2), bins=20),
            "score_chosen": histogram(m["score_chosen"]),
            "score_rejected": histogram(m["score_rejected"]),
            "score_margin": histogram(m["score_margin"]),
            "chosen_longer_share": round(float((m["chosen_chars"] > m["rejected_chars"]).mean()), 6),
        }
        out["chosen_rejected_ratio"]["scale"] = "log2"
    else:
        m = frame.select(
            _last_turn("messages", "user").str.len_chars().alias("prompt_chars"),
            _last_turn("messages", "assistant").str.len_chars().alias("response_chars"),
            pl.col("messages").list.len().alias("turns"),
        )
        out = {name: histogram(m[name]) for name in m.columns}
    if "lang" in frame.columns:
        counts = frame.group_by(pl.col("lang").fill_null("unknown")).len().sort("len", "lang", descending=[True, False])
        out["languages"] = {str(k): int(v) for k, v in counts.iter_rows()}
    if "dup_cluster" in frame.columns:
        sizes = frame.filter(pl.col("dup_cluster").is_not_null()).group_by("dup_cluster").len()
        out["dup_clusters_in_mix"] = {"clusters": sizes.height, "rows": int(sizes["len"].sum()) if sizes.height else 0}
    return out


def _final_turn_parts(frame: pl.DataFrame) -> pl.DataFrame:
    """Per row: source, reasoning words (null without reasoning) and answer words of the final assistant turn
    (the chosen one for pairs)."""
    col = "chosen" if row_kind(frame) == "preference" else "messages"
    last = pl.col(col).list.last()
    fields = frame.schema[col].inner.fields  # type: ignore[union-attr]
    reasoning = last.struct.field("reasoning_content") if any(f.name == "reasoning_content" for f in fields) else pl.lit(None, pl.String)
    return frame.select(
        "source",
        pl.when(reasoning.str.strip_chars().str.len_chars() > 0).then(_words(reasoning.str.strip_chars())).alias("reasoning_words"),
        _words(last.struct.field("content")).alias("answer_words"),
    )


def _words(text: pl.Expr) -> pl.Expr:
    return text.str.split(" ").list.len().cast(pl.Int64)


def _any_reasoning(frame: pl.DataFrame) -> bool:
    return bool(frame.height) and _final_turn_parts(frame)["reasoning_words"].is_not_null().any()


def reasoning_summary(frame: pl.DataFrame, store: MixStore) -> dict[str, Any]:
    """What the card's reasoning section shows: per source, rows with and without reasoning, the reasoning and
    answer lengths (words, final assistant turn; chosen for pairs), and the verified accuracy that the verify
    stage and rejection sampling recorded for it (correct / (correct + wrong), None where nothing was checked)."""
    parts = _final_turn_parts(frame) if frame.height else pl.DataFrame(schema={"source": pl.String,
                                                                              "reasoning_words": pl.Int64,
                                                                              "answer_words": pl.Int64})
    by_source = {}
    for name in sorted(set(parts["source"].to_list())):
        p = parts.filter(pl.col("source") == name)
        by_source[name] = {
            "rows": p.height,
            "thinking": int(p["reasoning_words"].is_not_null().sum()),
            "reasoning_words": histogram(p["reasoning_words"].drop_nulls()),
            "answer_words": histogram(p["answer_words"]),
        }
    return {"by_source": by_source, "reasoning_words": histogram(parts["reasoning_words"].drop_nulls()),
            "verified": verified_accuracy(store)}


def verified_accuracy(store: MixStore) -> dict[str, dict[str, Any]]:
    """Verdict counts per (stage, source) as the verify stage (`distributions.verify.by_source`) and rejection
    sampling (`rejection.verdicts`) recorded them."""
    out: dict[str, dict[str, Any]] = {}
    for key, stats in store.all_stats().items():
        if not isinstance(stats, dict):
            continue
        for source, counts in ((stats.get("distributions") or {}).get("verify") or {}).get("by_source", {}).items():
            out[f"{key}/{source}"] = {"stage": key, "source": source, **_accuracy(counts)}
        if stats.get("stage") == "rejection_sampling":
            verdicts = (stats.get("rejection") or {}).get("verdicts", {})
            out[f"{key}/{stats.get('name')}"] = {"stage": key, "source": stats.get("name"), **_accuracy(verdicts)}
    return dict(sorted(out.items()))


def _accuracy(counts: dict[str, Any]) -> dict[str, Any]:
    right, wrong = int(counts.get("correct", 0)), int(counts.get("wrong", 0))
    checked = {k: int(v) for k, v in counts.items() if k not in ("rows", "accuracy") and isinstance(v, int) and v}
    return {"verdicts": checked, "accuracy": round(right / (right + wrong), 4) if right + wrong else None}


def _rejected_counts(store: MixStore) -> pl.DataFrame:
    """(source, drop_stage, drop_reason, n) over every file in rejected/."""
    parts = []
    for path in sorted((store.root / "rejected").glob("*.parquet")):
        f = pl.read_parquet(path, columns=None)
        if f.is_empty():
            continue
        stage_default = path.stem
        src = pl.col("source") if "source" in f.columns else pl.lit(None, dtype=pl.String)
        stage = pl.col("drop_stage") if "drop_stage" in f.columns else pl.lit(stage_default)
        parts.append(f.select(src.alias("source"), stage.alias("drop_stage"), pl.col("drop_reason")))
    if not parts:
        return pl.DataFrame(schema={"source": pl.String, "drop_stage": pl.String, "drop_reason": pl.String,
                                    "n": pl.UInt32})
    return (
        pl.concat(parts)
        .group_by("source", "drop_stage", "drop_reason")
        .agg(pl.len().alias("n"))
        .sort("source", "drop_stage", "drop_reason")
    )


def sources_table(store: MixStore, curated: dict[str, pl.DataFrame], mix: MixResult) -> list[dict[str, Any]]:
    """Per source: rows read, dropped per stage and reason (from rejected/), kept after curation, rows in the mix.

    `unaccounted` is read - dropped - kept: zero when every stage recorded its drops."""
    counts = _rejected_counts(store)
    table = []
    for name in sorted(curated):
        ingest = store.read_stats(f"ingest-{name}")
        dropped: dict[str, dict[str, int]] = {}
        for _, stage, reason, n in counts.filter(pl.col("source") == name).iter_rows():
            dropped.setdefault(stage, {})[reason] = int(n)
        total_dropped = sum(sum(d.values()) for d in dropped.values())
        kept = curated[name].height
        read = ingest["rows_in"] if ingest else kept + total_dropped
        m = mix.stats["sources"].get(name)
        table.append({
            "source": name,
            "read": read,
            "dropped": dropped,
            "dropped_total": total_dropped,
            "kept": kept,
            "unaccounted": read - total_dropped - kept,
            "in_mix": m["rows"] if m else 0,
            "train": m["train"] if m else 0,
            "test": m["test"] if m else 0,
            "share_of_mix": m["share_of_mix"] if m else 0.0,
        })
    return table


def funnel(store: MixStore, mix: MixResult) -> list[dict[str, Any]]:
    """Rows in and out of every stage, in pipeline order: ingest (all sources), the curation stages (by their
    recorded `position`, else by rows in, which only falls along a pipeline), then the mix itself (rows drawn,
    repeats included)."""
    stats = {k: v for k, v in store.all_stats().items() if isinstance(v, dict) and "rows_in" in v and k != "mix"}
    ingest = [v for k, v in stats.items() if k.startswith("ingest-")]
    steps = []
    if ingest:
        dropped: dict[str, int] = {}
        for v in ingest:
            for r, n in v.get("dropped", {}).items():
                dropped[r] = dropped.get(r, 0) + n
        steps.append({"stage": "ingest", "rows_in": sum(v["rows_in"] for v in ingest),
                      "rows_kept": sum(v["rows_kept"] for v in ingest), "dropped": dict(sorted(dropped.items()))})
    others = sorted(((k, v) for k, v in stats.items() if not k.startswith("ingest-")),
                    key=lambda kv: (kv[1].get("position", float("inf")), -kv[1]["rows_in"], -kv[1]["rows_kept"], kv[0]))
    for k, v in others:
        steps.append({"stage": v.get("stage", k), "rows_in": v["rows_in"], "rows_kept": v["rows_kept"],
                      "dropped": v.get("dropped", {})})
    available = sum(s["available"] for s in mix.stats["sources"].values())
    steps.append({"stage": "mix", "rows_in": available, "rows_kept": mix.stats["rows"]["total"], "dropped": {}})
    return steps


def _clip(text: Any) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= EXAMPLE_CHARS else text[:EXAMPLE_CHARS] + "…"


def examples(mix: MixResult, per_source: int = 2) -> list[dict[str, Any]]:
    """A few rows of each source as drawn into the train split (first in shard order), quoted by the card."""
    frame = mix.train if mix.train.height else mix.test
    if frame.is_empty():
        return []
    kind = row_kind(frame)
    out = []
    for name in sorted(mix.stats["sources"]):
        part = frame.filter(pl.col("source") == name).head(per_source)
        if kind == "preference":
            part = part.select(
                "source", "id", "category", "prompt",
                _last_turn("chosen", "assistant").alias("chosen"), _last_turn("rejected", "assistant").alias("rejected"),
            )
        else:
            part = part.select("source", "id", "category", _last_turn("messages", "user").alias("prompt"),
                               _last_turn("messages", "assistant").alias("response"))
        out.extend({k: _clip(v) if isinstance(v, str) else v for k, v in row.items()} for row in part.to_dicts())
    return out


def rejected_examples(store: MixStore) -> list[dict[str, Any]]:
    """The first rejected row of each (stage, reason): what was dropped and the value that decided it."""
    out = []
    for path in sorted((store.root / "rejected").glob("*.parquet")):
        f = pl.read_parquet(path)
        if f.is_empty():
            continue
        text = pl.col("prompt") if "prompt" in f.columns else (pl.col("raw") if "raw" in f.columns else pl.lit(None))
        firsts = f.group_by("drop_reason", maintain_order=True).first().sort("drop_reason")
        for row in firsts.select(
            pl.col("drop_stage") if "drop_stage" in f.columns else pl.lit(path.stem).alias("drop_stage"),
            "drop_reason", "drop_detail",
            pl.col("source") if "source" in f.columns else pl.lit(None, dtype=pl.String).alias("source"),
            text.alias("text"),
        ).to_dicts():
            out.append({k: _clip(v) for k, v in row.items()})
    return out


def load_mix_stats(mix_dir: str | Path) -> dict[str, Any]:
    return read_json(Path(mix_dir) / "stats" / "mix.json")
