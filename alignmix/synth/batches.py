"""Per-batch resumable output for generation stages, and the final hand-over into a MixStore directory.

    <out>/batches/<stage>/run.json                 the stage's fingerprint (config + inputs)
    <out>/batches/<stage>/00003.rejected.parquet   written first
    <out>/batches/<stage>/00003.json               the batch's counters (tokens, seconds, ...)
    <out>/batches/<stage>/00003.kept.parquet       written last: its presence means the batch is done

A killed run restarts at the first batch without a `.kept.parquet`; a changed config (another fingerprint)
starts the stage over. `finish()` streams the kept batches, in order, into `data/` shards and writes
`rejected/<stage>.parquet` and `stats/<stage>.json`.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from alignmix.pipeline.schema import RowKind, empty_frame
from alignmix.pipeline.stage import histogram
from alignmix.pipeline.store import MixStore, ShardWriter, read_json, write_frame, write_json

# What a rejected generation looks like before it is a valid row: its raw text and why it was dropped.
REJECTED_SCHEMA = {
    "id": pl.String,
    "source": pl.String,
    "source_id": pl.String,
    "text": pl.String,
    "meta": pl.String,
    "drop_stage": pl.String,
    "drop_reason": pl.String,
    "drop_detail": pl.String,
}


class BatchStore:
    def __init__(self, root: str | Path, stage: str, fingerprint: str):
        self.store = MixStore(root)
        self.stage = stage
        self.fingerprint = fingerprint
        self.dir = Path(root) / "batches" / stage
        run = self.dir / "run.json"
        if run.exists() and read_json(run).get("fingerprint") != fingerprint:
            shutil.rmtree(self.dir)  # batches from another config must not be mixed into this one
        if not run.exists():
            write_json(run, {"stage": stage, "fingerprint": fingerprint})

    def _path(self, index: int, suffix: str) -> Path:
        return self.dir / f"{index:05d}.{suffix}"

    def done(self, index: int) -> bool:
        return self._path(index, "kept.parquet").exists()

    def done_batches(self) -> list[int]:
        return sorted(int(p.name.split(".")[0]) for p in self.dir.glob("*.kept.parquet"))

    def write(self, index: int, kept: pl.DataFrame, rejected: pl.DataFrame, counters: dict[str, Any]) -> None:
        write_frame(rejected, self._path(index, "rejected.parquet"))
        write_json(self._path(index, "json"), counters)
        write_frame(kept, self._path(index, "kept.parquet"))

    def kept(self, index: int) -> pl.DataFrame:
        return pl.read_parquet(self._path(index, "kept.parquet"))

    def rejected(self, index: int) -> pl.DataFrame:
        return pl.read_parquet(self._path(index, "rejected.parquet"))

    def counters(self, index: int) -> dict[str, Any]:
        return read_json(self._path(index, "json"))

    def finish(
        self, kind: RowKind, stats: dict[str, Any], rows_per_shard: int = 100_000, write_data: bool = True
    ) -> dict[str, Any]:
        """Shards from the kept batches (if `write_data`), the rejected rows, and the stage's stats (returned)."""
        batches = self.done_batches()
        outputs = []
        kept_rows = 0
        writer = ShardWriter(self.store.data_dir, "train", kind, rows_per_shard) if write_data else None
        prompt_words: list[pl.Series] = []
        answer_words: list[pl.Series] = []
        for i in batches:
            frame = self.kept(i)
            kept_rows += frame.height
            if writer:
                writer.write(frame if frame.height else empty_frame(kind))
            if kind == "sft" and frame.height:
                first_user = pl.col("messages").list.eval(pl.element().filter(pl.element().struct.field("role") == "user")).list.first()
                words = frame.select(
                    first_user.struct.field("content").str.split(" ").list.len().alias("p"),
                    pl.col("messages").list.last().struct.field("content").str.split(" ").list.len().alias("a"),
                )
                prompt_words.append(words["p"])
                answer_words.append(words["a"])
        if writer:
            outputs += [s["file"] for s in writer.close()]
        rejected_files = [self._path(i, "rejected.parquet") for i in batches]
        rejected = pl.concat([pl.read_parquet(p) for p in rejected_files], how="diagonal_relaxed") if rejected_files else pl.DataFrame()
        if rejected.is_empty():
            rejected = pl.DataFrame(schema=REJECTED_SCHEMA)
        self.store.write_rejected(self.stage, rejected)
        outputs.append(f"rejected/{self.stage}.parquet")
        totals: Counter = Counter()
        for i in batches:
            for k, v in self.counters(i).items():
                if isinstance(v, (int, float)):
                    totals[k] += v
        dropped = dict(sorted(Counter(rejected["drop_reason"].to_list()).items())) if rejected.height else {}
        seconds = float(totals.get("seconds", 0.0))
        distributions = {}
        if prompt_words:
            distributions = {
                "instruction_words": histogram(pl.concat(prompt_words), bins=20),
                "response_words": histogram(pl.concat(answer_words), bins=20),
            }
        out = {
            "stage": self.stage,
            "rows_in": kept_rows + rejected.height,
            "rows_kept": kept_rows,
            "dropped": dropped,
            "batches": len(batches),
            "seconds": round(seconds, 3),
            "completion_tokens": int(totals.get("completion_tokens", 0)),
            "tokens_per_s": round(totals.get("completion_tokens", 0) / seconds, 2) if seconds else None,
            "counters": {k: v for k, v in sorted(totals.items()) if k not in ("seconds", "completion_tokens")},
            "distributions": distributions,
            **stats,
        }
        self.store.mark_done(self.stage, self.fingerprint, out, outputs)
        return self.store.read_stats(self.stage)


def stage_rows(root: str | Path, stage: str) -> pl.DataFrame | None:
    """The kept rows of every finished batch of `stage` under `root`, in batch order (None if there are none)."""
    files = sorted((Path(root) / "batches" / stage).glob("*.kept.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files], how="vertical_relaxed") if files else None


def rejected_frame(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=REJECTED_SCHEMA) if rows else pl.DataFrame(schema=REJECTED_SCHEMA)


class Timer:
    def __init__(self) -> None:
        self.start = time.perf_counter()

    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 6)
