"""Running curation stages over a mix's rows, resumably: gather the parts, record each stage, hand over files.

The stages themselves live in `alignmix.filters`; this module only knows the stage contract. Each finished
stage leaves `rejected/<stage>.parquet`, `stats/<stage>.json` (with its fingerprint and per-source counts) and
its kept rows in `work/curate/<stage>.parquet`; a rerun whose inputs and config hash match reads those instead
of running the stage again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageResult, count_reasons
from alignmix.pipeline.store import MixStore, fingerprint, sha256_file, write_frame

import alignmix

# Rows per curation shard: the unit one task scores. Small enough to spread over a few workers, large enough
# that per-task overhead stays below the work.
DEFAULT_SHARD_ROWS = 5_000


def mix_source_names(recipe: Recipe, available: list[str] | pl.DataFrame) -> list[str]:
    """The parts that feed the mix: the `mix.sources` names, in their order; without them, every source present."""
    if recipe.mix.sources:
        return list(recipe.mix.sources)  # a source curation emptied still counts: the mix says it has 0 rows
    if isinstance(available, pl.DataFrame):
        available = available["source"].unique(maintain_order=True).to_list() if available.height else []
    return list(available)


def gather(recipe: Recipe, part_dirs: dict[str, str]) -> tuple[pl.DataFrame, str]:
    """Concatenate the shards of every part that feeds the mix; return the rows and a fingerprint of them."""
    wanted = list(recipe.mix.sources) if recipe.mix.sources else sorted(part_dirs)
    missing = [n for n in wanted if n not in part_dirs]
    if missing:
        raise ValueError(
            f"mix.sources names {missing}, but the recipe has no source or generator by that name "
            f"(it has {sorted(part_dirs)})"
        )
    frames, digests, kinds = [], [], {}
    for name in wanted:
        store = MixStore(part_dirs[name])
        files = store.shard_files()
        if not files:
            raise ValueError(f"part {name!r} ({part_dirs[name]}) holds no shards")
        frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        kinds[name] = row_kind(frame)
        frames.append(frame)
        digests.append([name, [sha256_file(f) for f in files]])
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"a mix holds one row kind, but its sources differ: {kinds}; turn SFT prompts into pairs with "
            "`preferences:` (and mix the pairs), or build two mixes"
        )
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    names = [s.get("stage") for s in recipe.curation]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"curation lists stage(s) {twice} twice; each stage runs once, with all its rules")
    return frame, fingerprint("gather", alignmix.__version__, digests)


def stage_fingerprint(spec: dict[str, Any], previous: str) -> str:
    return fingerprint("stage", alignmix.__version__, spec, previous)


def kept_path(store: MixStore, stage: str) -> Path:
    return store.root / "work" / "curate" / f"{stage}.parquet"


def load_done(store: MixStore, stage: str, stage_fp: str) -> pl.DataFrame | None:
    """The kept rows of a stage finished earlier with the same fingerprint, or None."""
    if store.is_done(stage, stage_fp):
        return pl.read_parquet(kept_path(store, stage))
    return None


def split(frame: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """Consecutive shards of `rows` rows (at least one shard, even when empty)."""
    if frame.height == 0:
        return [frame]
    return [frame.slice(i, rows) for i in range(0, frame.height, rows)]


def record_stage(
    store: MixStore, stage: Stage, frame_in: pl.DataFrame, result: StageResult, stage_fp: str, position: int
) -> pl.DataFrame:
    """Write a stage's rejected rows, kept rows and stats (with per-source counts); mark it done; return kept."""
    kept, rejected, stats = result
    store.write_rejected(stage.name, rejected)
    write_frame(kept, kept_path(store, stage.name))
    record = stats.model_dump(mode="json")
    record["by_source"] = by_source(frame_in, kept, rejected)
    record["position"] = position  # the stage's place in the recipe's curation list, for the card's funnel
    store.mark_done(stage.name, stage_fp, record, [store.rejected_path(stage.name), kept_path(store, stage.name)])
    return kept


def by_source(frame_in: pl.DataFrame, kept: pl.DataFrame, rejected: pl.DataFrame) -> dict[str, Any]:
    names = frame_in["source"].unique(maintain_order=True).to_list() if frame_in.height else []
    return {
        n: {
            "rows_in": frame_in.filter(pl.col("source") == n).height,
            "rows_kept": kept.filter(pl.col("source") == n).height,
            "dropped": count_reasons(rejected.filter(pl.col("source") == n)) if rejected.height else {},
        }
        for n in names
    }


def write_curated(store: MixStore, frame: pl.DataFrame) -> str:
    path = store.root / "work" / "curated.parquet"
    write_frame(frame, path)
    return str(path)
