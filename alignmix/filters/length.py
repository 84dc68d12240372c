"""Length limits, and length bias measured over the corpus and acted on where it is found.

Lengths count words (whitespace-split), characters, or tokens of a named tokenizer. A response's length is its
answer's (the message `content`); its reasoning (`reasoning_content`) is counted apart, in `reasoning_len`
(`chosen_reasoning_len`, `rejected_reasoning_len`; null for a turn without reasoning), so the response limits and the
length-bias check read answers only. For preference rows, `len_ratio` = len(chosen) / len(rejected). The stage records the corpus before and after it
(`stats.distributions["length_bias"]`):

    ratio_of_means        mean(chosen_len) / mean(rejected_len): the course's corpus-level rule, suspect above 2
    pair_ratio            mean, median and geometric mean of the per-pair `len_ratio` over pairs whose two sides
                          are non-empty. The geometric mean, exp(mean(log ratio)), is the robust one: a 300-word
                          answer against a 1-word one adds 300/n to the plain mean and log(300)/n to the log mean
    share_chosen_longer   chosen_longer / (chosen_longer + chosen_shorter). Pairs of equal length are ties: they
                          carry no length signal, so they count on neither side and are reported as `ties`
    buckets               the same counts and share in quantile buckets of a pair's mean length (c + r) / 2

What the stage does about it (rules in this order; a row carries the first it breaks):

    prompt_too_short, prompt_too_long, response_too_short, response_too_long
                          the limits, all off by default                     "chosen: 3 < 5"
    reasoning_too_short, reasoning_too_long
                          the same for a turn's reasoning, off by default    "chosen reasoning: 9383 > 4000"
    length_ratio          an abnormal pair: one response more than `max_length_ratio` times the other and at
                          least `min_length_gap` longer                      "0.007 (chosen 1, rejected 143)"
    length_balance        where the label follows length: in a bucket whose share lies outside 0.5 +- tolerance,
                          a seeded subsample of the majority side brings it to the band's edge
                          "bucket 0 of 5 (mean length under 38.4): chosen longer in 10, shorter in 19"

A worked picture, in words: chosen (5, 12, 40, 3) against rejected (5, 6, 50, 1) is one tie, two pairs with the
longer chosen and one with the shorter: share 2/3; ratio of means 60/62 = 0.968; per-pair ratios 1, 2, 0.8, 3.

    >>> pic = length_picture(np.array([5, 12, 40, 3]), np.array([5, 6, 50, 1]), np.zeros(4, dtype=int), [])
    >>> pic["share_chosen_longer"], pic["ties"], pic["ratio_of_means"], pic["pair_ratio"]["median"]
    (0.6667, 1, 0.9677, 1.5)

Why the defaults are what they are (measured after the default consistency stage, in words, on 200 real
UltraFeedback pairs from trl-lib/ultrafeedback_binarized and 1,000 real HH-RLHF test pairs):

- `max_length_ratio` 10 and `min_length_gap` 30 words. Real pairs differ a lot in length: UltraFeedback's
  per-pair ratio has its 2.5% and 97.5% quantiles at 1/27 and 35, HH-RLHF's at 1/8 and 9, so the old cut at 2
  dropped 42% of UltraFeedback (74 of 175) and 46% of HH-RLHF (454 of 989) while their ratio of means is 1.04
  and 1.03. Beyond 10x a pair compares two kinds of answer (a one-word label against a paragraph, "Ye" against
  67 words, "Confidence: 100%" against 387 words) and its length dwarfs every other difference: 17 of 175 UF
  pairs, 35 of 989 HH pairs. The gap spares pairs short on both sides ("C" against a 20-word sentence,
  "159.7 miles" against 25 words): a short answer against a sentence is a normal pair, not an abnormal one.
- `balance` on, `balance_tolerance` 0.05: the acceptance band 45-55% in every bucket. Buckets already inside it
  are left alone, the others are brought to the band's edge, which drops the fewest pairs: on UltraFeedback,
  whose buckets stand at 34%, 43%, 46%, 63% and 43% (chosen is shorter among short pairs, longer among long
  ones), 16 pairs; on HH-RLHF, where one bucket is at 55.05%, 2. Exact halves would cost 26 and 54.
- `balance_buckets` 5, `min_bucket_pairs` 30: five buckets when there are at least 150 pairs (a 200-pair
  sample gives about 35 pairs a bucket after consistency); fewer on smaller inputs, down to one bucket, so a
  bucket is never a handful of pairs whose share is noise. Below 30 pairs the stage measures and does not
  balance: one pair with the longer chosen is a share of 100%, and says nothing about the label.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from alignmix.filters.normalize import final_turn, text_expr
from alignmix.filters.reasoning import final_reasoning
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, StageResult, decide, histogram, keep_all

Unit = Literal["words", "chars", "tokens"]

# `min_length_gap` when the recipe leaves it unset: 30 words, in the other units about as much text
# (English averages ~5 characters and ~1.3 tokens per word, the space included).
DEFAULT_GAP: dict[str, int] = {"words": 30, "chars": 150, "tokens": 40}


class LengthConfig(StageConfig):
    unit: Unit = Field("words", description="what a length counts: words, chars, or tokens of `tokenizer`")
    tokenizer: str | None = Field(None, description="model id, folder or 'default' whose tokenizer counts tokens")
    min_prompt: int | None = Field(None, ge=0, description="shortest prompt kept")
    max_prompt: int | None = Field(None, ge=1, description="longest prompt kept")
    min_response: int | None = Field(None, ge=0, description="shortest response kept (each of chosen and rejected)")
    max_response: int | None = Field(None, ge=1, description="longest response kept (each of chosen and rejected)")
    min_reasoning: int | None = Field(None, ge=0, description="shortest reasoning kept, where a turn has reasoning")
    max_reasoning: int | None = Field(
        None, ge=1, description="longest reasoning kept (each response's `reasoning_content`); a cap for the training "
        "context, off by default: real correct traces run long (DeepSeek-R1 on MMLU-Pro: p99 6,721 words, max 9,383)",
    )
    max_length_ratio: float | None = Field(
        10.0, gt=1.0,
        description="an abnormal pair: the longer response is more than this many times the shorter (and at least "
        "`min_length_gap` longer); unset: no per-pair cut",
    )
    min_length_gap: int | None = Field(
        None, ge=0,
        description="how much longer the longer response must also be for `max_length_ratio` to call a pair "
        "abnormal; unset: 30 words, 150 chars or 40 tokens; 0: the ratio alone",
    )
    balance: bool = Field(
        True, description="subsample the majority side of each length bucket whose share of pairs with the longer "
        "chosen lies outside 0.5 +- balance_tolerance",
    )
    balance_tolerance: float = Field(
        0.05, ge=0.0, lt=0.5, description="the band around 0.5 a bucket's share may keep; 0: exactly half"
    )
    balance_buckets: int = Field(5, ge=1, description="length buckets: quantiles of a pair's mean length")
    min_bucket_pairs: int = Field(
        30, ge=1, description="fewer buckets when the input has fewer than balance_buckets * min_bucket_pairs pairs; "
        "an input of fewer pairs than this is measured but not balanced",
    )
    seed: int = Field(0, description="seed of the balancing subsample")

    @property
    def length_gap(self) -> int:
        return DEFAULT_GAP[self.unit] if self.min_length_gap is None else self.min_length_gap


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


# --- the corpus picture ---------------------------------------------------------------------------------------


def bucket_count(pairs: int, buckets: int, min_bucket_pairs: int) -> int:
    """How many length buckets `pairs` pairs get: `buckets`, fewer when a bucket would hold < min_bucket_pairs.

    >>> bucket_count(175, 5, 30), bucket_count(100, 5, 30), bucket_count(12, 5, 30)
    (5, 3, 1)
    """
    return max(1, min(buckets, pairs // min_bucket_pairs))


def bucket_edges(mean_len: np.ndarray, buckets: int) -> list[float]:
    """The inner edges of `buckets` quantile buckets of the pairs' mean lengths; equal quantiles merge.

    >>> bucket_edges(np.array([1, 2, 3, 4, 5, 6, 7, 8]), 4)
    [2.75, 4.5, 6.25]
    >>> bucket_edges(np.array([3, 3, 3, 3, 9]), 2)
    [3.0]
    """
    if buckets <= 1 or mean_len.size == 0:
        return []
    inner = np.quantile(mean_len.astype(np.float64), np.linspace(0, 1, buckets + 1)[1:-1])
    return [round(float(e), 6) for e in np.unique(inner)]


def bucket_of(mean_len: np.ndarray, edges: list[float]) -> np.ndarray:
    """Bucket index of each pair: 0 below the first edge, i from edge i-1 (included) up to edge i."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), mean_len, side="right")


def bucket_label(b: int, edges: list[float]) -> str:
    """The mean lengths bucket `b` holds, in words a card can print.

    >>> [bucket_label(b, [38.5, 85.0]) for b in range(3)], bucket_label(0, [])
    (['under 38.5', '38.5 to under 85', '85 and over'], 'all')
    """
    if not edges:
        return "all"
    if b == 0:
        return f"under {edges[0]:g}"
    if b == len(edges):
        return f"{edges[-1]:g} and over"
    return f"{edges[b - 1]:g} to under {edges[b]:g}"


def _share(longer: int, shorter: int) -> float | None:
    return round(longer / (longer + shorter), 4) if longer + shorter else None


def length_picture(chosen_len: np.ndarray, rejected_len: np.ndarray, bucket: np.ndarray,
                   edges: list[float]) -> dict[str, Any]:
    """The length-bias picture of a set of pairs (see the module docstring for each figure)."""
    c, r = chosen_len.astype(np.float64), rejected_len.astype(np.float64)
    n = int(c.size)
    if n == 0:
        return {"pairs": 0}
    longer, shorter = int((c > r).sum()), int((c < r).sum())
    both = (c > 0) & (r > 0)
    ratios = c[both] / r[both]
    mean_r = float(r.mean())
    buckets = []
    for b in range(len(edges) + 1):
        inside = bucket == b
        bl, bs = int((c[inside] > r[inside]).sum()), int((c[inside] < r[inside]).sum())
        buckets.append({
            "bucket": b, "label": bucket_label(b, edges), "pairs": int(inside.sum()), "chosen_longer": bl,
            "chosen_shorter": bs, "ties": int(inside.sum()) - bl - bs, "share_chosen_longer": _share(bl, bs),
        })
    return {
        "pairs": n,
        "chosen_longer": longer,
        "chosen_shorter": shorter,
        "ties": n - longer - shorter,
        "share_chosen_longer": _share(longer, shorter),
        "mean_chosen_len": round(float(c.mean()), 3),
        "mean_rejected_len": round(mean_r, 3),
        "ratio_of_means": round(float(c.mean()) / mean_r, 4) if mean_r else None,
        "pair_ratio": {
            "pairs": int(ratios.size),
            "mean": round(float(ratios.mean()), 4) if ratios.size else None,
            "median": round(float(np.median(ratios)), 4) if ratios.size else None,
            "geometric_mean": round(float(np.exp(np.log(ratios).mean())), 4) if ratios.size else None,
        },
        "buckets": buckets,
    }


# --- balancing ------------------------------------------------------------------------------------------------


def balance_mask(chosen_len: np.ndarray, rejected_len: np.ndarray, bucket: np.ndarray, eligible: np.ndarray,
                 edges: list[float], tolerance: float, seed: int,
                 keys: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows to drop so that in every bucket the share of pairs with the longer chosen, among eligible pairs
    whose lengths differ, lies within 0.5 +- tolerance. Returns (drop mask, detail per row).

    A bucket already inside the band loses nothing. Otherwise the majority side keeps the most pairs the band
    allows, floor(minority * (0.5 + tol) / (0.5 - tol)), chosen at random with `seed` (per bucket, over the rows
    sorted by `keys` when given, so the choice does not depend on the input's order). Ties are never dropped.

    >>> drop, _ = balance_mask(np.array([9] * 10 + [1] * 4), np.array([1] * 10 + [9] * 4), np.zeros(14, int),
    ...                        np.ones(14, bool), [], tolerance=0.05, seed=0)
    >>> int(drop.sum())  # 10 longer, 4 shorter: the band allows floor(4 * 0.55 / 0.45) = 4 longer
    6
    """
    n = len(chosen_len)
    drop = np.zeros(n, dtype=bool)
    detail = np.full(n, None, dtype=object)
    high = 0.5 + tolerance
    for b in np.unique(bucket[eligible]):
        members = np.flatnonzero(eligible & (bucket == b))
        if keys is not None:
            members = members[np.argsort(keys[members], kind="stable")]
        longer = members[chosen_len[members] > rejected_len[members]]
        shorter = members[chosen_len[members] < rejected_len[members]]
        major, minor = (longer, shorter) if len(longer) > len(shorter) else (shorter, longer)
        # 1e-9: a share exactly on the band's edge (11 of 20 at 0.55) is inside it despite float rounding.
        allowed = int(np.floor(len(minor) * high / (1.0 - high) + 1e-9))
        excess = len(major) - allowed
        if excess <= 0:
            continue
        victims = np.random.default_rng([seed, int(b)]).choice(major, size=excess, replace=False)
        drop[victims] = True
        detail[victims] = (f"bucket {int(b)} of {len(edges) + 1} (mean length {bucket_label(int(b), edges)}): "
                           f"chosen longer in {len(longer)}, shorter in {len(shorter)}")
    return drop, detail


# --- the stage ------------------------------------------------------------------------------------------------


class LengthFilter(Stage[LengthConfig]):
    """Length limits; for preference pairs, the cut of abnormal pairs and the balancing of length buckets.

    Scoring is row-local (lengths, limits, the per-pair cut), so shards score in parallel; the buckets and the
    balancing look at the whole corpus, so they are decided in `finish`, once over all the scored shards.
    """

    name = "length"
    config_class = LengthConfig

    def __init__(self, config: LengthConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._counter = _Counter(self.config.unit, self.config.tokenizer)

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg, kind = self.config, row_kind(frame)
        count = self._counter.count
        scored = keep_all(frame).with_columns(count(frame, text_expr("prompt", kind), "prompt_len"))
        responses: list[str] = []
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
        elif kind == "sft":
            scored = scored.with_columns(count(frame, text_expr("response", kind), "response_len"))
            responses = ["response_len"]
        # Prompt rows (no response yet) are measured by their prompt alone.
        reasoning = self._reasoning_lengths(frame, kind)
        scored = scored.with_columns(reasoning)

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
        for series in reasoning:
            label = series.name.removesuffix("_reasoning_len") if series.name != "reasoning_len" else "response"
            limit(series.name, cfg.min_reasoning, True, "reasoning_too_short", f"{label} reasoning")
            limit(series.name, cfg.max_reasoning, False, "reasoning_too_long", f"{label} reasoning")
        if kind == "preference" and cfg.max_length_ratio is not None:
            longer = pl.max_horizontal("chosen_len", "rejected_len")
            shorter = pl.min_horizontal("chosen_len", "rejected_len")
            abnormal = (longer > cfg.max_length_ratio * shorter) & (longer - shorter >= cfg.length_gap)
            detail = pl.format("{} (chosen {}, rejected {})",
                               pl.col("len_ratio").round(4), pl.col("chosen_len"), pl.col("rejected_len"))
            scored = decide(scored, abnormal, "length_ratio", detail)
        return scored

    def _reasoning_lengths(self, frame: pl.DataFrame, kind: str) -> list[pl.Series]:
        """The length of each response's reasoning (`reasoning_len`; `chosen_reasoning_len`, `rejected_...` for
        pairs), null for a turn without reasoning, in the stage's unit."""
        columns = {"sft": [("messages", "reasoning_len")], "prompt": [],
                   "preference": [("chosen", "chosen_reasoning_len"), ("rejected", "rejected_reasoning_len")]}[kind]
        out = []
        for col, name in columns:
            text = final_reasoning(frame, col)
            counted = self._counter.count(frame, text.fill_null(""), name)
            missing = frame.select(text.is_null()).to_series()
            out.append(pl.select(pl.when(missing).then(None).otherwise(counted).alias(name)).to_series())
        return out

    def finish(self, scored: pl.DataFrame, start: float | None = None) -> StageResult:
        """Bucket the pairs (`len_bucket`) and balance the buckets over the whole scored frame, then decide."""
        start = time.perf_counter() if start is None else start
        if "len_ratio" in scored.columns:
            scored = self._balance(scored)
        return super().finish(scored, start)

    def _edges(self, scored: pl.DataFrame) -> tuple[np.ndarray, list[float]]:
        """Mean length of every pair and the bucket edges: quantiles over the stage's whole input."""
        mean_len = ((scored["chosen_len"] + scored["rejected_len"]) / 2).to_numpy()
        cfg = self.config
        return mean_len, bucket_edges(mean_len, bucket_count(scored.height, cfg.balance_buckets, cfg.min_bucket_pairs))

    def _balances(self, scored: pl.DataFrame) -> bool:
        # Fewer pairs than one bucket should hold cannot tell a bias from chance: measured, not balanced.
        return self.config.balance and scored.height >= self.config.min_bucket_pairs

    def _balance(self, scored: pl.DataFrame) -> pl.DataFrame:
        mean_len, edges = self._edges(scored)
        bucket = bucket_of(mean_len, edges)
        scored = scored.with_columns(pl.Series("len_bucket", bucket, dtype=pl.Int32))
        if not self._balances(scored):
            return scored
        drop, detail = balance_mask(
            scored["chosen_len"].to_numpy(),
            scored["rejected_len"].to_numpy(),
            bucket,
            scored["drop_reason"].is_null().to_numpy(),
            edges,
            self.config.balance_tolerance,
            self.config.seed,
            keys=scored["id"].to_numpy() if "id" in scored.columns else None,
        )
        scored = scored.with_columns(
            pl.Series("_bal", drop), pl.Series("_bal_detail", detail.tolist(), dtype=pl.String)
        )
        return decide(scored, pl.col("_bal"), "length_balance", pl.col("_bal_detail")).drop("_bal", "_bal_detail")

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        out: dict[str, Any] = {"prompt_len": histogram(scored["prompt_len"], bins=20)}
        if "len_ratio" in scored.columns:
            out["chosen_len"] = histogram(scored["chosen_len"], bins=20)
            out["rejected_len"] = histogram(scored["rejected_len"], bins=20)
            out["len_ratio_before"] = histogram(scored["len_ratio"].clip(0, 4), bins=16, range_=(0.0, 4.0))
            out["len_ratio_after"] = histogram(kept["len_ratio"].clip(0, 4), bins=16, range_=(0.0, 4.0))
            _, edges = self._edges(scored)
            cfg = self.config

            def picture(frame: pl.DataFrame) -> dict[str, Any]:
                return length_picture(frame["chosen_len"].to_numpy(), frame["rejected_len"].to_numpy(),
                                      frame["len_bucket"].to_numpy(), edges)

            out["length_bias"] = {
                "unit": cfg.unit,
                "bucket_edges": edges,
                "balance": cfg.balance,
                "balanced": self._balances(scored),
                "tolerance": cfg.balance_tolerance,
                "max_length_ratio": cfg.max_length_ratio,
                "min_length_gap": cfg.length_gap,
                "before": picture(scored),
                "after": picture(kept),
            }
        elif "response_len" in scored.columns:
            out["response_len"] = histogram(scored["response_len"], bins=20)
        for col in ("reasoning_len", "chosen_reasoning_len", "rejected_reasoning_len"):
            if col in scored.columns and scored[col].null_count() < scored.height:
                out[col] = histogram(scored[col], bins=20)
        return out
