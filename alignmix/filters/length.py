"""Length limits and length bias.

Lengths are counted in words (whitespace-split), characters, or tokens of a named tokenizer. For preference
rows, `len_ratio` = len(chosen) / len(rejected); a pair beyond `max_length_ratio` either way is dropped
(default 2.0: a label that mostly rewards length teaches length). The stats record the corpus before and
after: mean chosen and rejected lengths, the ratio's distribution, the share of pairs where chosen is longer.

Reasons: prompt_too_short, prompt_too_long, response_too_short, response_too_long (detail: "chosen: 3 < 5"),
length_ratio (detail: the ratio), length_balance (with `balance`: detail names the bucket and its counts).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from alignmix.filters.normalize import final_turn, text_expr
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, histogram, keep_all

Unit = Literal["words", "chars", "tokens"]


class LengthConfig(StageConfig):
    unit: Unit = Field("words", description="what a length counts: words, chars, or tokens of `tokenizer`")
    tokenizer: str | None = Field(None, description="model id, folder or 'default' whose tokenizer counts tokens")
    min_prompt: int | None = Field(None, ge=0, description="shortest prompt kept")
    max_prompt: int | None = Field(None, ge=1, description="longest prompt kept")
    min_response: int | None = Field(None, ge=0, description="shortest response kept (each of chosen and rejected)")
    max_response: int | None = Field(None, ge=1, description="longest response kept (each of chosen and rejected)")
    max_length_ratio: float | None = Field(
        2.0, gt=1.0, description="drop pairs whose len(chosen)/len(rejected) is above this or below its inverse"
    )
    balance: bool = Field(
        False, description="subsample so that in each length bucket chosen is the longer one in about half the pairs"
    )
    balance_buckets: int = Field(5, ge=1, description="length buckets for balance: quantiles of a pair's mean length")
    seed: int = Field(0, description="seed of the balancing subsample")


class _Counter:
    """Counts lengths of a text column in the configured unit; a tokenizer loads on first use."""

    def __init__(self, unit: Unit, tokenizer: str | None):
        if unit == "tokens" and not tokenizer:
            raise ValueError("unit: tokens needs `tokenizer` (a model id, folder, or 'default')")
        self.unit, self.tokenizer_name, self._tok = unit, tokenizer, None

    def expr(self, text: pl.Expr) -> pl.Expr | None:
        if self.unit == "words":
            words = text.str.replace_all(r"\s+", " ").str.split(" ")
            return words.list.eval(pl.element().filter(pl.element() != "")).list.len()
        if self.unit == "chars":
            return text.str.len_chars()
        return None

    def count(self, frame: pl.DataFrame, text: pl.Expr, name: str) -> pl.Series:
        expr = self.expr(text)
        if expr is not None:
            return frame.select(expr.cast(pl.Int64).alias(name)).to_series()
        if self._tok is None:
            from transformers import AutoTokenizer

            from alignmix.pipeline.models import resolve_model

            self._tok = AutoTokenizer.from_pretrained(resolve_model(self.tokenizer_name))
        texts = frame.select(text).to_series().to_list()
        ids = self._tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        return pl.Series(name, [len(x) for x in ids], dtype=pl.Int64)


def corpus_picture(frame: pl.DataFrame) -> dict[str, Any]:
    """Mean chosen/rejected lengths, the share of pairs where chosen is longer, and the ratio's histogram."""
    if frame.height == 0:
        return {"pairs": 0}
    return {
        "pairs": frame.height,
        "mean_chosen_len": round(float(frame["chosen_len"].mean()), 3),
        "mean_rejected_len": round(float(frame["rejected_len"].mean()), 3),
        "share_chosen_longer": round(float((frame["chosen_len"] > frame["rejected_len"]).mean()), 4),
        "len_ratio": histogram(frame["len_ratio"].clip(0, 4), bins=16, range_=(0.0, 4.0)),
    }


def balance_mask(chosen_len: np.ndarray, rejected_len: np.ndarray, eligible: np.ndarray, buckets: int, seed: int):
    """Rows to drop so each bucket has as many pairs with the longer chosen as with the shorter chosen.

    Returns (drop mask, detail per row). Buckets are quantiles of the pair's mean length among eligible rows;
    pairs of equal length are never dropped.
    """
    n = len(chosen_len)
    drop = np.zeros(n, dtype=bool)
    detail = np.full(n, None, dtype=object)
    idx = np.flatnonzero(eligible)
    if idx.size == 0:
        return drop, detail
    mean_len = (chosen_len[idx] + rejected_len[idx]) / 2.0
    edges = np.unique(np.quantile(mean_len, np.linspace(0, 1, buckets + 1)[1:-1])) if buckets > 1 else np.array([])
    bucket = np.searchsorted(edges, mean_len, side="right")
    rng = np.random.default_rng(seed)
    for b in np.unique(bucket):
        members = idx[bucket == b]
        longer = members[chosen_len[members] > rejected_len[members]]
        shorter = members[chosen_len[members] < rejected_len[members]]
        major, minor = (longer, shorter) if len(longer) > len(shorter) else (shorter, longer)
        excess = len(major) - len(minor)
        if excess <= 0:
            continue
        victims = rng.choice(major, size=excess, replace=False)
        drop[victims] = True
        detail[victims] = f"bucket {int(b)}: chosen longer in {len(longer)}, shorter in {len(shorter)}"
    return drop, detail


class LengthFilter(Stage[LengthConfig]):
    """Drop rows outside the length limits, and preference pairs whose chosen/rejected length ratio is extreme."""

    name = "length"
    config_class = LengthConfig

    def __init__(self, config: LengthConfig | dict[str, Any] | None = None):
        super().__init__(config)
        # Balancing compares rows across the frame, so shards cannot be scored apart.
        self.row_local = not self.config.balance
        self._counter = _Counter(self.config.unit, self.config.tokenizer)

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg, kind = self.config, row_kind(frame)
        count = self._counter.count
        scored = keep_all(frame).with_columns(count(frame, text_expr("prompt", kind), "prompt_len"))
        if kind == "preference":
            scored = scored.with_columns(
                count(frame, final_turn("chosen").fill_null(""), "chosen_len"),
                count(frame, final_turn("rejected").fill_null(""), "rejected_len"),
            )
            scored = scored.with_columns(
                pl.when(pl.col("rejected_len") > 0)
                .then(pl.col("chosen_len") / pl.col("rejected_len"))
                .otherwise(pl.lit(float("inf")))
                .alias("len_ratio")
            )
            responses = ["chosen_len", "rejected_len"]
        else:
            scored = scored.with_columns(count(frame, text_expr("response", kind), "response_len"))
            responses = ["response_len"]

        def limit(col: str, bound: int | None, low: bool, reason: str, label: str) -> None:
            nonlocal scored
            if bound is None:
                return
            hit = pl.col(col) < bound if low else pl.col(col) > bound
            op = " < " if low else " > "
            detail = pl.lit(f"{label}: ") + pl.col(col).cast(pl.String) + pl.lit(f"{op}{bound}")
            scored = decide(scored, hit, reason, detail)

        limit("prompt_len", cfg.min_prompt, True, "prompt_too_short", "prompt")
        limit("prompt_len", cfg.max_prompt, False, "prompt_too_long", "prompt")
        for col in responses:
            label = col.removesuffix("_len")
            limit(col, cfg.min_response, True, "response_too_short", label)
            limit(col, cfg.max_response, False, "response_too_long", label)
        if kind == "preference" and cfg.max_length_ratio is not None:
            r = cfg.max_length_ratio
            scored = decide(
                scored,
                (pl.col("len_ratio") > r) | (pl.col("len_ratio") < 1.0 / r),
                "length_ratio",
                pl.col("len_ratio").round(4).cast(pl.String),
            )
        if kind == "preference" and cfg.balance:
            drop, detail = balance_mask(
                scored["chosen_len"].to_numpy(),
                scored["rejected_len"].to_numpy(),
                scored["drop_reason"].is_null().to_numpy(),
                cfg.balance_buckets,
                cfg.seed,
            )
            scored = scored.with_columns(
                pl.Series("_bal", drop), pl.Series("_bal_detail", detail.tolist(), dtype=pl.String)
            )
            scored = decide(scored, pl.col("_bal"), "length_balance", pl.col("_bal_detail")).drop("_bal", "_bal_detail")
        return scored

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt_len": histogram(scored["prompt_len"], bins=20)}
        if "len_ratio" in scored.columns:
            out["chosen_len"] = histogram(scored["chosen_len"], bins=20)
            out["rejected_len"] = histogram(scored["rejected_len"], bins=20)
            out["len_ratio_before"] = histogram(scored["len_ratio"].clip(0, 4), bins=16, range_=(0.0, 4.0))
            out["len_ratio_after"] = histogram(kept["len_ratio"].clip(0, 4), bins=16, range_=(0.0, 4.0))
            out["length_bias"] = {"before": corpus_picture(scored), "after": corpus_picture(kept)}
        else:
            out["response_len"] = histogram(scored["response_len"], bins=20)
        return out
