"""Run curation stages over rows on disk: what `alignmix dedup` and `alignmix filter` call.

    summary = curate("ingested/", "deduped/", [build_stage({"stage": "near_dedup"})])

IN is a directory alignmix wrote (its data/ shards are read), a folder of parquet files, or one parquet file.
OUT receives data/ (the kept rows), rejected/<stage>.parquet and stats/<stage>.json.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from alignmix.pipeline.schema import check_frame
from alignmix.pipeline.stage import Stage, StageStats
from alignmix.pipeline.store import MixStore, write_shards


def read_rows(path: str | Path) -> pl.DataFrame:
    """SFT or preference rows from a mix directory, a folder of parquet files, or a parquet file."""
    p = Path(path)
    if p.is_file():
        files = [p]
    elif (p / "data").is_dir():
        files = MixStore(p).shard_files()
    else:
        files = sorted(p.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"{p} holds no parquet rows (looked for data/*.parquet, *.parquet)")
    frame = pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed")
    check_frame(frame)
    return frame


def curate(src: str | Path, out: str | Path, stages: list[Stage], rows_per_shard: int = 100_000) -> list[StageStats]:
    """Apply `stages` in order to the rows at `src`; write kept rows, rejected rows and stats under `out`."""
    frame = read_rows(src)
    store = MixStore(out)
    all_stats = []
    for stage in stages:
        frame, rejected, stats = stage.run(frame)
        store.write_rejected(stage.name, rejected)
        store.write_stats(stage.name, stats.model_dump(mode="json"))
        all_stats.append(stats)
    write_shards(frame, store.data_dir, "train", rows_per_shard)
    return all_stats


def render_stats(all_stats: list[StageStats]) -> str:
    lines = []
    for s in all_stats:
        dropped = ", ".join(f"{r} {n}" for r, n in s.dropped.items()) or "none"
        lines.append(f"{s.stage}: {s.rows_in} in, {s.rows_kept} kept, dropped: {dropped} ({s.seconds:.2f}s)")
    return "\n".join(lines)
