"""The parts of a curation stage a flow fans out: scoring a shard, signing a shard for MinHash, and the
global step that needs every row (clustering near duplicates)."""

from __future__ import annotations

from typing import Any

import polars as pl

from alignmix.filters.near_dedup import NearDedup
from alignmix.filters.registry import build_stage
from alignmix.pipeline.curation import DEFAULT_SHARD_ROWS
from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.stage import Stage, StageResult


def shard_rows(recipe: Recipe) -> int:
    return int((recipe.task_runner or {}).get("shard_rows", DEFAULT_SHARD_ROWS))


def score_shard(stage_spec: dict[str, Any], shard: pl.DataFrame) -> pl.DataFrame:
    """Score one shard with a row-local stage (its measurements and decisions, nothing dropped yet)."""
    return build_stage(stage_spec).score(shard)


def signs_shards(stage: Stage) -> bool:
    return isinstance(stage, NearDedup)


def sketch_shard(stage_spec: dict[str, Any], shard: pl.DataFrame) -> Any:
    """MinHash signatures (and shingle hashes) of one shard."""
    stage = build_stage(stage_spec)
    assert isinstance(stage, NearDedup)
    return stage.sketch(shard)


def run_global(stage: Stage, frame: pl.DataFrame, sketches: list[Any] | None) -> StageResult:
    """Run a stage that looks across rows; for near dedup, from the shards' sketches."""
    if sketches is not None and isinstance(stage, NearDedup):
        from alignmix.filters.minhash import concat_sketches
        from alignmix.filters.near_dedup import near_duplicate_clusters

        root, pairs, sims = near_duplicate_clusters(concat_sketches(sketches), stage.config)
        return stage.finish(stage.score_clusters(frame, root, pairs, sims))
    return stage.run(frame)
