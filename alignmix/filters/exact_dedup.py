"""Exact deduplication: rows whose text is equal after normalization (NFKC, case, whitespace) are one row.

    >>> frame["prompt"].to_list()                         # doctest: +SKIP
    ['Hello  world', 'hello world', 'Other']
    >>> ExactDedup({"field": "prompt"}).run(frame).rejected.select("drop_reason", "drop_detail")   # doctest: +SKIP
    exact_duplicate | <id of row 0>
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from alignmix.filters.lsh import keep_per_cluster
from alignmix.filters.normalize import TextField, normalized_series, text_expr
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, histogram, keep_all

KeepRule = Literal["first", "highest_score"]


class ExactDedupConfig(StageConfig):
    field: TextField = Field("prompt", description="the text compared: prompt, first_user, conversation, response, ...")
    keep: KeepRule = Field("first", description="which row of a duplicate group stays: first seen or best scored")
    score_column: str = Field("score_chosen", description="the column `keep: highest_score` ranks by")


def kept_positions(frame: pl.DataFrame, root: np.ndarray, keep: KeepRule, score_column: str) -> np.ndarray:
    """For each row, the position of the row its cluster keeps (root = smallest position in the cluster)."""
    if keep == "first":
        return keep_per_cluster(root)
    if score_column not in frame.columns:
        raise ValueError(f"keep: highest_score ranks by {score_column!r}, which the frame lacks; set score_column")
    scores = frame[score_column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    return keep_per_cluster(root, scores)


def mark_duplicates(scored: pl.DataFrame, root: np.ndarray, kept: np.ndarray, reason: str, column: str) -> pl.DataFrame:
    """Write the cluster column (`column`: the cluster's first position, null for a row alone) and drop every
    row that is not its cluster's kept row, with the kept row's id as the detail."""
    n = len(root)
    size = np.bincount(root, minlength=n)[root]
    ids = scored["id"].to_numpy() if "id" in scored.columns else np.arange(n).astype(str)
    scored = scored.with_columns(
        pl.Series(column, np.where(size > 1, root, -1)).replace(-1, None).cast(pl.Int64),
        pl.Series(f"{column}_size", size, dtype=pl.Int64),
        pl.Series("_kept_id", ids[kept], dtype=pl.String),
        pl.Series("_is_dup", kept != np.arange(n)),
    )
    scored = decide(scored, pl.col("_is_dup"), reason, pl.col("_kept_id"))
    return scored.drop("_kept_id", "_is_dup")


class ExactDedup(Stage[ExactDedupConfig]):
    """Drop rows whose normalized text equals an earlier (or better scored) row's: `exact_duplicate`."""

    name = "exact_dedup"
    config_class = ExactDedupConfig
    row_local = False

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg = self.config
        key = normalized_series(frame.select(text_expr(cfg.field, row_kind(frame))).to_series())
        work = key.alias("k").to_frame().with_row_index("pos")
        # Empty text is never a duplicate of other empty text: it gets its own group.
        root_expr = pl.when(pl.col("k") == "").then(pl.col("pos")).otherwise(pl.col("pos").min().over("k"))
        root = work.select(root_expr.cast(pl.Int64)).to_series().to_numpy()
        kept = kept_positions(frame, root, cfg.keep, cfg.score_column)
        return mark_duplicates(keep_all(frame), root, kept, "exact_duplicate", "exact_cluster")

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        sizes = scored.filter(pl.col("exact_cluster").is_not_null()).group_by("exact_cluster").len()["len"]
        return {"exact_cluster_size": histogram(sizes, bins=10)}
