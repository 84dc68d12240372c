"""Near-duplicate removal with MinHash LSH: word 5-gram shingles, 128 permutations, Jaccard threshold 0.8.

The steps are separate functions (see `lsh`) so a flow can run them per shard and per band:

    sks = [sketch(shard_texts) for each shard]                         # per shard
    keys = [band_keys(sk.signatures, cfg.bands, cfg.rows) for sk in sks]  # per shard
    sk = concat_sketches(sks); k = np.concatenate(keys); empty = np.diff(sk.offsets) == 0
    pairs = unique_pairs(np.concatenate([bucket_pairs(k[:, b], empty) for b in range(cfg.bands)]))  # per band
    pairs, sims = verify_pairs(pairs, sk, cfg.threshold, cfg.verify)
    scored = NearDedup(cfg).score_clusters(frame, clusters(len(sk), pairs), pairs, sims)

Every candidate pair is checked with the exact Jaccard similarity of its shingle sets, so the bands and rows
are tuned for recall: datasketch's optimizer with weights (0.02, 0.98) picks 17 bands of 7 rows for 0.8,
which makes a pair at exactly 0.8 a candidate with chance 0.98 (datasketch's default weights: 9 x 13, 0.40).
One row per cluster stays (the first, or the best scored); the others go with `near_duplicate` and the
kept row's id.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import polars as pl
from pydantic import Field, model_validator

from alignmix.filters.exact_dedup import KeepRule, kept_positions, mark_duplicates
from alignmix.filters.lsh import (
    MAX_BUCKET_PAIRS,
    Verify,
    band_keys,
    bucket_pairs,
    candidate_probability,
    clusters,
    in_threads,
    optimal_params,
    unique_pairs,
    verify_pairs,
)
from alignmix.filters.minhash import ShingleHash, Sketch, concat_sketches, sketch
from alignmix.filters.normalize import TextField, text_expr
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, histogram, keep_all


class NearDedupConfig(StageConfig):
    field: TextField = Field("prompt", description="the text compared: prompt, first_user, conversation, response, ...")
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity of shingle sets that makes duplicates")
    ngram: int = Field(5, ge=1, description="words per shingle")
    num_perm: int = Field(128, ge=2, description="MinHash permutations")
    seed: int = Field(1, description="permutation seed (datasketch's default is 1)")
    hash: ShingleHash = Field("tabulation", description="shingle hash: tabulation (fast) or sha1 (datasketch default)")
    lsh_weights: tuple[float, float] = Field(
        (0.02, 0.98), description="(false positive, false negative) weights for choosing bands and rows"
    )
    bands: int | None = Field(None, ge=1, description="LSH bands; chosen from threshold and lsh_weights when unset")
    rows: int | None = Field(None, ge=1, description="rows per band; chosen with bands")
    verify: Verify = Field("exact", description="check candidates by exact Jaccard, by signature estimate, or not")
    keep: KeepRule = Field("first", description="which row of a cluster stays: first seen or highest score")
    score_column: str = Field("score_chosen", description="the column `keep: highest_score` ranks by")

    @model_validator(mode="after")
    def _choose_bands(self) -> "NearDedupConfig":
        if (self.bands is None) != (self.rows is None):
            raise ValueError("set both bands and rows, or neither (they are then chosen from threshold)")
        if self.bands is None:
            self.bands, self.rows = optimal_params(self.threshold, self.num_perm, tuple(self.lsh_weights))
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


# Threads for the array steps of one process (signing a shard, the bands, exact Jaccard): numpy and polars release
# the GIL there, and every result is the same for any number. Two at most: past that the steps are memory-bound.
THREADS = min(2, os.cpu_count() or 1)


def candidate_pairs(sk: Sketch, bands: int, rows: int, threads: int = 1) -> np.ndarray:
    """All bands' candidate pairs of one sketch (global document indices), deduplicated."""
    keys = band_keys(sk.signatures, bands, rows)
    empty = np.diff(sk.offsets) == 0
    per_band = in_threads(lambda i: bucket_pairs(keys[:, i], empty, MAX_BUCKET_PAIRS), range(bands), threads)
    return unique_pairs(np.concatenate(per_band))


def near_duplicate_clusters(sk: Sketch, config: NearDedupConfig, threads: int = THREADS
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(root per document, verified pairs, their similarities) for one sketch of all documents."""
    pairs = candidate_pairs(sk, config.bands, config.rows, threads)
    pairs, sims = verify_pairs(pairs, sk, config.threshold, config.verify, threads)
    return clusters(len(sk), pairs), pairs, sims


class NearDedup(Stage[NearDedupConfig]):
    """Drop all but one row of each MinHash-LSH cluster: `near_duplicate`, detail = the kept row's id."""

    name = "near_dedup"
    config_class = NearDedupConfig
    row_local = False

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        return self.score_sketches(frame, [self.sketch(frame)])

    def sketch(self, frame: pl.DataFrame) -> Sketch:
        """The MinHash sketch of one shard's rows (the per-shard step; `concat_sketches` joins shards)."""
        cfg = self.config
        texts = frame.select(text_expr(cfg.field, row_kind(frame))).to_series()
        # a shard in THREADS chunks, signed at once (a chunk of a few thousand texts keeps its arrays in cache)
        chunk = max(1_024, -(-len(texts) // THREADS))
        return sketch(texts, cfg.ngram, cfg.num_perm, cfg.seed, cfg.hash, workers=THREADS, chunk=chunk)

    def score_sketches(self, frame: pl.DataFrame, sketches: list[Sketch]) -> pl.DataFrame:
        """The scored frame from the sketches of its consecutive shards (signed anywhere, in shard order)."""
        root, pairs, sims = near_duplicate_clusters(concat_sketches(sketches), self.config)
        return self.score_clusters(frame, root, pairs, sims)

    def score_clusters(
        self, frame: pl.DataFrame, root: np.ndarray, pairs: np.ndarray, sims: np.ndarray
    ) -> pl.DataFrame:
        """The scored frame from clusters computed elsewhere (per shard and per band, e.g. on Dask):
        `root` per row (`lsh.clusters`), and the verified pairs with their similarities (`lsh.verify_pairs`)."""
        cfg = self.config
        kept = kept_positions(frame, root, cfg.keep, cfg.score_column)
        # The similarity of each row to its closest verified duplicate.
        best = np.full(len(root), np.nan)
        if len(pairs):
            np.fmax.at(best, pairs[:, 0], sims)
            np.fmax.at(best, pairs[:, 1], sims)
        scored = mark_duplicates(keep_all(frame), root, kept, "near_duplicate", "dup_cluster")
        return scored.with_columns(pl.Series("dup_similarity", best).fill_nan(None))

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        sizes = scored.filter(pl.col("dup_cluster").is_not_null()).group_by("dup_cluster").len()["len"]
        cfg = self.config
        return {
            "dup_cluster_size": histogram(sizes, bins=10),
            "dup_similarity": histogram(scored["dup_similarity"], bins=20, range_=(cfg.threshold, 1.0)),
            "lsh": {
                "bands": cfg.bands,
                "rows": cfg.rows,
                "candidate_probability_at_threshold": round(
                    candidate_probability(cfg.threshold, cfg.bands, cfg.rows), 6
                ),
                "clusters": int(sizes.len()),
            },
        }
