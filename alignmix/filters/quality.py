"""Quality heuristics, each with its own reason, on the responses a row teaches (the final assistant turn of
SFT rows; `chosen`, or with `responses: both` also `rejected`, of preference rows): their answers (`content`), not
their reasoning, which the `reasoning` stage checks (filters/reasoning.py). A prompt row teaches no
response yet: only `empty_turn` applies to it (the response rules misfire on prompts: on 2,861 real ShareGPT first
turns, repeated_ngrams would drop 22 and unclosed_code_fence 1, all of them pasted code, configs or keyword lists):

    empty_turn            a turn with no text (any turn)                   detail: "chosen[1]"
    repeated_ngrams       1 - distinct/total word n-grams above the limit  detail: "chosen: 0.7143 > 0.3 (3-grams)"
    refusal_only          a short response that only refuses or apologises detail: "chosen: i'm sorry"
    unclosed_code_fence   an odd number of ``` fence lines                 detail: "chosen: 3 fences"
"""

from __future__ import annotations

import re
from typing import Any, Literal

import polars as pl
from pydantic import Field

from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, histogram, keep_all

# Openings of a refusal or apology, matched at the start of a short response.
REFUSAL_PATTERNS = (
    r"i'?m sorry",
    r"i am sorry",
    r"i apologi[sz]e",
    r"sorry, (?:but )?i",
    r"my apologies",
    r"i (?:can ?not|can't|won't|am unable to|'m unable to|am not able to|'m not able to)",
    r"unfortunately,? i (?:can ?not|can't|am unable|'m unable)",
    r"as an ai(?: language model)?,? i (?:can ?not|can't|don't|do not|am unable)",
)
_REFUSAL_RE = re.compile(r"^(" + "|".join(REFUSAL_PATTERNS) + r")", re.IGNORECASE)
_FENCE_RE = re.compile(r"^\s*```", re.MULTILINE)


class QualityConfig(StageConfig):
    responses: Literal["chosen", "both"] = Field("chosen", description="which preference responses to check")
    repeated_ngram: int = Field(3, ge=1, description="n of the word n-grams counted for repetition")
    max_repeated_ngram_ratio: float | None = Field(
        0.3, gt=0, le=1, description="largest share of repeated word n-grams kept (degenerate loops score ~0.9)"
    )
    min_words_for_repetition: int = Field(20, ge=1, description="shorter responses are not judged on repetition")
    refusal_max_words: int | None = Field(
        40, ge=1, description="a response of at most this many words that opens with a refusal is refusal_only"
    )
    check_code_fences: bool = Field(True, description="drop responses with an odd number of ``` fences")


def repeated_ngram_ratio(text: str, n: int) -> float:
    """1 - distinct/total word n-grams: 0 for text with no repeats, close to 1 for a loop.

    >>> repeated_ngram_ratio("a b c a b c a b c", 3)
    0.571429
    """
    return words_repeated_ngram_ratio(text.casefold().split(), n)


def words_repeated_ngram_ratio(words: list[str], n: int) -> float:
    """`repeated_ngram_ratio` of text already case-folded and split into `words`.

    >>> words_repeated_ngram_ratio("a b c a b c a b c".split(), 3)
    0.571429
    """
    total = len(words) - n + 1
    if total <= 0:
        return 0.0
    # zip of the n shifted lists yields exactly the `total` n-grams, as tuples, without a Python-level loop
    return round(1.0 - len(set(zip(*(words[i:] for i in range(n))))) / total, 6)


def refusal(text: str, max_words: int, n_words: int | None = None) -> str | None:
    """The refusal phrase a short response opens with, or None (`n_words`: its word count, if known)."""
    if (len(text.split()) if n_words is None else n_words) > max_words:
        return None
    m = _REFUSAL_RE.search(text.strip())
    return m.group(1).lower() if m else None


class QualityFilter(Stage[QualityConfig]):
    """Drop rows with empty turns, looping text, refusal-only answers or unclosed code fences."""

    name = "quality"
    config_class = QualityConfig

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg = self.config
        kind = row_kind(frame)
        conversations = ["chosen", "rejected"] if kind == "preference" else ["messages"]
        checked = ["messages"] if kind == "sft" else (["chosen", "rejected"] if cfg.responses == "both" else ["chosen"])
        if kind == "prompt":
            checked = []  # no response yet: only empty turns are checked

        empty: list[str | None] = [None] * frame.height
        for col in conversations:
            for i, conv in enumerate(frame[col].to_list()):
                if empty[i] is None:
                    for k, m in enumerate(conv or []):
                        if not (m.get("content") or "").strip():
                            empty[i] = f"{col}[{k}]"
                            break
        if kind == "preference":
            prompts = frame["prompt"].to_list()
            empty = [e if e is not None or (p or "").strip() else "prompt" for e, p in zip(empty, prompts)]

        ratio_detail: list[str | None] = [None] * frame.height
        refusal_detail: list[str | None] = [None] * frame.height
        fence_detail: list[str | None] = [None] * frame.height
        ratios: list[float] = [0.0] * frame.height
        refusals: list[bool] = [False] * frame.height
        fences: list[int] = [0] * frame.height
        label = {"messages": "response"}
        for col in checked:
            texts = frame.select(pl.col(col).list.last().struct.field("content").fill_null("")).to_series().to_list()
            name = label.get(col, col)
            for i, text in enumerate(texts):
                # Case folding never makes or removes whitespace, so these are the words of `text` too.
                words = text.casefold().split()
                long_enough = len(words) >= cfg.min_words_for_repetition
                r = words_repeated_ngram_ratio(words, cfg.repeated_ngram) if long_enough else 0.0
                ratios[i] = max(ratios[i], r)
                limit = cfg.max_repeated_ngram_ratio
                if limit is not None and r > limit and ratio_detail[i] is None:
                    ratio_detail[i] = f"{name}: {r} > {limit} ({cfg.repeated_ngram}-grams)"
                phrase = refusal(text, cfg.refusal_max_words, len(words)) if cfg.refusal_max_words else None
                if phrase and refusal_detail[i] is None:
                    refusals[i] = True
                    refusal_detail[i] = f"{name}: {phrase}"
                count = len(_FENCE_RE.findall(text))
                fences[i] = max(fences[i], count)
                if cfg.check_code_fences and count % 2 == 1 and fence_detail[i] is None:
                    fence_detail[i] = f"{name}: {count} fences"

        scored = keep_all(frame).with_columns(
            pl.Series("repeated_ngram_ratio", ratios, dtype=pl.Float64),
            pl.Series("refusal", refusals, dtype=pl.Boolean),
            pl.Series("code_fences", fences, dtype=pl.Int64),
        )
        for reason, details in (
            ("empty_turn", empty),
            ("repeated_ngrams", ratio_detail),
            ("refusal_only", refusal_detail),
            ("unclosed_code_fence", fence_detail),
        ):
            s = pl.Series("_d", details, dtype=pl.String)
            scored = decide(scored.with_columns(s), pl.col("_d").is_not_null(), reason, pl.col("_d")).drop("_d")
        return scored

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        return {"repeated_ngram_ratio": histogram(scored["repeated_ngram_ratio"], bins=20, range_=(0.0, 1.0))}
