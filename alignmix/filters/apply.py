"""Running curation stages over rows: the one engine behind `alignmix dedup`, `alignmix filter`, `alignmix mix`
and the flow's `curate`.

    kept = run_stages(frame, [build_stage({"stage": "near_dedup"})], MixStore(out))
    summary = curate("ingested/", "deduped/", [build_stage({"stage": "near_dedup"})])

Each stage scores its input in consecutive shards (row-local stages score each shard alone; near-duplicate
detection signs each shard and clusters once over all of them), decides once, and leaves
`rejected/<stage>.parquet` and `stats/<stage>.json` (with per-source counts and its place in the list). The
shard maps are parameters: in-process by default, Prefect tasks (threads or a Dask cluster) in the flow; the
bytes are the same either way. Given a fingerprint of the input, a run is resumable: a stage finished earlier
with the same input and config is read back instead of run again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import polars as pl

from alignmix.filters.near_dedup import NearDedup
from alignmix.filters.registry import build_stage
from alignmix.pipeline.curation import (
    DEFAULT_SHARD_ROWS,
    gather,
    load_done,
    record_stage,
    shard_rows,
    split,
    stage_fingerprint,
    write_curated,
)
from alignmix.pipeline.inputs import read_input
from alignmix.pipeline.progress import track
from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.stage import Stage, StageResult, StageStats
from alignmix.pipeline.store import MixStore, write_shards

class StageFailed(RuntimeError):
    """A curation stage raised: the message names the stage, its place in the list, and its input."""


# (stage, consecutive shards, shard_done) -> one result per shard, in order: scored frames, or MinHash sketches.
# `shard_done(rows)` is called as each shard's result arrives (progress; see alignmix.pipeline.progress).
ShardMap = Callable[..., list[Any]]


def _no_progress(rows: int) -> None:
    pass


def score_in_process(stage: Stage, shards: list[pl.DataFrame], shard_done: Callable[[int], None] = _no_progress
                     ) -> list[pl.DataFrame]:
    out = []
    for s in shards:
        out.append(stage.score(s))
        shard_done(s.height)
    return out


def sketch_in_process(stage: Stage, shards: list[pl.DataFrame], shard_done: Callable[[int], None] = _no_progress
                      ) -> list[Any]:
    assert isinstance(stage, NearDedup)
    out = []
    for s in shards:
        out.append(stage.sketch(s))
        shard_done(s.height)
    return out


def run_stage(stage: Stage, frame: pl.DataFrame, shard_rows: int = DEFAULT_SHARD_ROWS,
              score: ShardMap = score_in_process, sketch: ShardMap = sketch_in_process) -> StageResult:
    """One stage over `frame`, sharded: the same result as `stage.run(frame)`, with the shard work mapped.
    Progress (rows scored, per shard) goes wherever the caller sent it (`progress_bars`, `progress_log`)."""
    start = time.perf_counter()
    with track(f"curate {stage.name}", frame.height, unit="rows") as progress:
        if stage.row_local:
            return stage.finish(pl.concat(score(stage, split(frame, shard_rows), progress.advance)), start)
        if isinstance(stage, NearDedup):
            return stage.finish(stage.score_sketches(frame, sketch(stage, split(frame, shard_rows), progress.advance)),
                                start)
        result = stage.run(frame)
        progress.advance(frame.height)
        return result


def run_stages(
    frame: pl.DataFrame,
    stages: list[Stage],
    store: MixStore,
    *,
    fingerprint: str | None = None,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    score: ShardMap = score_in_process,
    sketch: ShardMap = sketch_in_process,
    log: Callable[[str], None] = lambda line: None,
) -> pl.DataFrame:
    """Run `stages` in order over `frame`, recording each in `store`; return the rows every stage kept.

    `fingerprint` identifies the input rows; with it, each stage's fingerprint chains from the one before and a
    stage finished earlier with the same chain is skipped (its kept rows are read from work/curate/).
    """
    names = [s.name for s in stages]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"curation lists stage(s) {twice} twice; each stage runs once, with all its rules")
    for position, stage in enumerate(stages, start=1):
        stage_fp = stage_fingerprint(stage, fingerprint) if fingerprint else None
        if stage_fp:
            done = load_done(store, stage.name, stage_fp)
            if done is not None:
                log(f"{stage.name}: finished in an earlier run, skipped")
                frame, fingerprint = done, stage_fp
                continue
        try:
            result = run_stage(stage, frame, shard_rows, score, sketch)
        except Exception as err:
            sources = frame["source"].unique(maintain_order=True).to_list() if "source" in frame.columns else []
            raise StageFailed(
                f"stage {stage.name} ({position} of {len(stages)} in curation) failed on {frame.height} rows "
                f"from {', '.join(map(str, sources)) or 'no source'}: {type(err).__name__}: {err}"
            ) from err
        frame = record_stage(store, stage, frame, result, stage_fp, position)
        fingerprint = stage_fp
        s = result.stats
        log(f"{stage.name}: {s.rows_in} in, {s.rows_kept} kept, dropped {s.dropped or 'none'}")
    return frame


def curate_recipe(recipe: Recipe, part_dirs: dict[str, str], *, score: ShardMap = score_in_process,
                  sketch: ShardMap = sketch_in_process, log: Callable[[str], None] = lambda line: None) -> str:
    """The recipe's curation over the parts that feed its mix, resumably; return the path of the curated rows.
    What both `alignmix mix` and the flow's `curate` run (the flow maps the shards onto Prefect tasks)."""
    store = MixStore(recipe.out_dir())
    frame, fingerprint = gather(recipe, part_dirs)
    kept = run_stages(frame, [build_stage(spec) for spec in recipe.curation], store, fingerprint=fingerprint,
                      shard_rows=shard_rows(recipe), score=score, sketch=sketch, log=log)
    return write_curated(store, kept)


def curate_frames(frames: dict[str, pl.DataFrame], stages: list[Stage], store: MixStore) -> dict[str, pl.DataFrame]:
    """Run `stages` over in-memory sources together (so dedup sees across them), in name order; return the
    kept rows per source."""
    names = sorted(frames)
    frame = pl.concat([frames[n] for n in names], how="diagonal_relaxed") if names else pl.DataFrame()
    kept = run_stages(frame, stages, store)
    return {n: kept.filter(pl.col("source") == n) for n in names}


def read_rows(path: str | Path, work_dir: str | Path | None = None, *, format: str | None = None) -> pl.DataFrame:
    """The rows at `path`: rows alignmix wrote (a folder with data/ shards, parquet files in the row schema) as
    they are, anything else `alignmix ingest` reads through ingest, its rejected records and stats written to
    `work_dir` (see `pipeline.inputs.read_input`)."""
    return read_input(path, work_dir, format=format).frame


def curate(src: str | Path | pl.DataFrame, out: str | Path, stages: list[Stage],
           rows_per_shard: int = 100_000) -> list[StageStats]:
    """Apply `stages` in order to the rows at `src` (or a frame of rows); write kept rows, rejected rows and stats
    under `out` (an input that is not rows alignmix wrote is ingested, its rejects and stats kept in `out` too)."""
    store = MixStore(out)
    frame = run_stages(src if isinstance(src, pl.DataFrame) else read_rows(src, out), stages, store)
    write_shards(frame, store.data_dir, "train", rows_per_shard)
    return [StageStats.model_validate(store.read_stats(s.name)) for s in stages]


def render_stats(all_stats: list[StageStats]) -> str:
    lines = []
    for s in all_stats:
        dropped = ", ".join(f"{r} {n}" for r, n in s.dropped.items()) or "none"
        lines.append(f"{s.stage}: {s.rows_in} in, {s.rows_kept} kept, dropped: {dropped} ({s.seconds:.2f}s)")
    return "\n".join(lines)
