"""The stage contract: a typed object with a pydantic config and one method, frame in, kept/rejected/stats out.

A stage scores first and decides second. A subclass implements `score(frame)`, which returns the frame with
its measurement columns added (`len_ratio`, `lang`, `dup_cluster`, ...) and two decision columns:
`drop_reason` (null to keep the row, else a short stable code) and `drop_detail` (the deciding value, as text).
`Stage.run` then splits kept from rejected, stamps `drop_stage`, times it and counts every reason:

    >>> result = LengthFilter(LengthConfig(max_words=5)).run(frame)      # doctest: +SKIP
    >>> result.stats.rows_in == result.stats.rows_kept + sum(result.stats.dropped.values())
    True
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

import polars as pl
from pydantic import BaseModel, Field

from alignmix.pipeline.config import StrictModel


class StageConfig(StrictModel):
    """Base for stage configs: unknown fields are errors, so a typo in a recipe never passes silently."""


class StageStats(BaseModel):
    stage: str
    rows_in: int
    rows_kept: int
    dropped: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    distributions: dict[str, Any] = Field(default_factory=dict, description="what the data card plots")
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def rows_dropped(self) -> int:
        return sum(self.dropped.values())


class StageResult(NamedTuple):
    kept: pl.DataFrame
    rejected: pl.DataFrame
    stats: StageStats


C = TypeVar("C", bound=StageConfig)


class Stage(ABC, Generic[C]):
    """Subclasses set `name` and `config_class` and implement `score`; they may override `describe`."""

    name: ClassVar[str]
    config_class: ClassVar[type[StageConfig]]
    # True when each row's score depends on that row alone, so shards can be scored independently and in
    # parallel. Dedup looks across rows and sets it False.
    row_local: ClassVar[bool] = True

    def __init__(self, config: C | dict[str, Any] | None = None):
        if config is None:
            config = self.config_class()
        elif isinstance(config, dict):
            config = self.config_class(**config)
        self.config: C = config  # type: ignore[assignment]

    def fresh(self) -> "Stage[C]":
        """A new instance with the same config and nothing loaded yet (no tokenizer, model or index): what one
        parallel worker scores with, since such resources are not safe to share between threads."""
        return type(self)(self.config)

    @abstractmethod
    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Return `frame` with measurement columns plus `drop_reason` and `drop_detail` (both String)."""

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        """Distributions for the data card, computed from the scored frame. Default: none."""
        return {}

    def run(self, frame: pl.DataFrame) -> StageResult:
        start = time.perf_counter()
        scored = self.score(frame)
        return self.finish(scored, start)

    def finish(self, scored: pl.DataFrame, start: float | None = None) -> StageResult:
        """Decide on an already scored frame: split, count, describe. For a `row_local` stage the flow scores
        shards in parallel, concatenates them in order and calls this once, so the result is the same bytes."""
        start = time.perf_counter() if start is None else start
        kept, rejected = split_decisions(scored, self.name)
        stats = StageStats(
            stage=self.name,
            rows_in=scored.height,
            rows_kept=kept.height,
            dropped=count_reasons(rejected),
            distributions=self.describe(scored, kept),
            config=self.config.model_dump(mode="json"),
        )
        stats.seconds = round(time.perf_counter() - start, 6)
        return StageResult(kept, rejected, stats)


def split_decisions(scored: pl.DataFrame, stage: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split a scored frame on its `drop_reason` column into kept rows (decision columns removed) and
    rejected rows (with `drop_stage`, `drop_reason`, `drop_detail`)."""
    for col in ("drop_reason", "drop_detail"):
        if col not in scored.columns:
            raise ValueError(f"stage {stage!r} did not write the {col!r} column")
    scored = scored.with_columns(pl.col("drop_reason").cast(pl.String), pl.col("drop_detail").cast(pl.String))
    dropped = pl.col("drop_reason").is_not_null()
    kept = scored.filter(~dropped).drop("drop_reason", "drop_detail")
    rejected = scored.filter(dropped).with_columns(pl.lit(stage, dtype=pl.String).alias("drop_stage"))
    cols = [c for c in rejected.columns if c not in ("drop_stage", "drop_reason", "drop_detail")]
    rejected = rejected.select(*cols, "drop_stage", "drop_reason", "drop_detail")
    return kept, rejected


def count_reasons(rejected: pl.DataFrame) -> dict[str, int]:
    if rejected.is_empty():
        return {}
    counts = rejected.group_by("drop_reason").len().sort("drop_reason")
    return {r: int(n) for r, n in counts.iter_rows()}


def keep_all(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with empty decision columns: the starting point of most `score` implementations."""
    return frame.with_columns(
        pl.lit(None, dtype=pl.String).alias("drop_reason"), pl.lit(None, dtype=pl.String).alias("drop_detail")
    )


def decide(frame: pl.DataFrame, condition: pl.Expr, reason: str, detail: pl.Expr) -> pl.DataFrame:
    """Mark rows where `condition` holds with `reason` and `detail`, unless an earlier rule already dropped them.

    Rules apply in the order they are called, so each dropped row carries the first rule it broke.
    """
    hit = condition.fill_null(False) & pl.col("drop_reason").is_null()
    return frame.with_columns(
        pl.when(hit).then(pl.lit(reason)).otherwise(pl.col("drop_reason")).alias("drop_reason"),
        pl.when(hit).then(detail.cast(pl.String)).otherwise(pl.col("drop_detail")).alias("drop_detail"),
    )


def histogram(values: pl.Series, bins: int = 20, range_: tuple[float, float] | None = None) -> dict[str, Any]:
    """The one histogram format every stage writes into `stats.distributions` and the data card plots:

        {"edges": [e0, ..., eB], "counts": [c0, ..., cB-1], "n": N, "mean": m, "p50": ..., "p90": ..., "null": k}

    Nulls and NaNs are counted in `null`, not binned.
    """
    import numpy as np

    s = values.cast(pl.Float64)
    nulls = int(s.is_null().sum() + s.is_nan().fill_null(False).sum())
    arr = s.drop_nulls().drop_nans().to_numpy()
    if arr.size == 0:
        return {"edges": [], "counts": [], "n": 0, "mean": None, "p50": None, "p90": None, "null": nulls}
    counts, edges = np.histogram(arr, bins=bins, range=range_)
    return {
        "edges": [round(float(e), 6) for e in edges],
        "counts": [int(c) for c in counts],
        "n": int(arr.size),
        "mean": round(float(arr.mean()), 6),
        "p50": round(float(np.percentile(arr, 50)), 6),
        "p90": round(float(np.percentile(arr, 90)), 6),
        "null": nulls,
    }
