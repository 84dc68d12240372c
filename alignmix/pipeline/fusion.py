"""Thinking-mode fusion (Qwen3's stage 3): one mix of thinking and non-thinking rows at set shares, each row telling
the model which mode it is in, so that one model learns both and a user switches with a flag.

    mix:
      sources:
        reasoning_pairs: {fraction: 1.0}                # thinking rows (their answers carry reasoning)
        direct_pairs:    {fraction: 1.0, mode: non_thinking}
      fusion: {thinking: 0.5}                           # flags: user, empty_think: true (the defaults)

A row is thinking when its final assistant turn (SFT) or its chosen answer (pairs) has non-empty reasoning. A
source's `mode` is `auto` (each row as it is), `non_thinking` (the reasoning is taken out of every assistant turn:
the same traces serve as direct answers) or `thinking` (a row without reasoning is an error). Then, as Qwen3 does:

    flags: user         the last user turn ends with " /think" or " /no_think" (Qwen3's soft switch)
    empty_think: true   a non-thinking row's final assistant turn gets reasoning_content "" (Qwen3's template
                        renders it as an empty `<think>\\n\\n</think>` block, join_reasoning likewise)

Rows are rewritten before they are drawn, so their ids hash what is written. `thinking: 0.7` makes 70% of the
drawn rows thinking ones: the side over its share loses draws (seeded, spread over its sources in proportion),
and the stats record both sides before and after; nothing is upsampled to reach a share.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.schema import content_id, row_kind

Mode = Literal["auto", "thinking", "non_thinking"]
FLAGS = {"thinking": "/think", "non_thinking": "/no_think"}


class FusionSpec(StrictModel):
    thinking: float | None = Field(
        None, ge=0, le=1, description="the share of thinking rows in the mix (None: as the sources give them)"
    )
    flags: Literal["user", "none"] = Field("user", description="user: append /think or /no_think to the last user turn")
    empty_think: bool = Field(True, description="non-thinking rows' final answer gets an empty reasoning block")


class FusionError(ValueError):
    """A source whose rows cannot take the mode the recipe gives it."""


def has_reasoning(messages: list[dict[str, Any]] | None) -> bool:
    """Whether the final assistant turn carries non-empty reasoning."""
    last = messages[-1] if messages else None
    return bool(last and last.get("role") == "assistant" and (last.get("reasoning_content") or "").strip())


def row_is_thinking(frame: pl.DataFrame) -> pl.Series:
    col = "chosen" if row_kind(frame) == "preference" else "messages"
    return pl.Series("thinking", [has_reasoning(m) for m in frame[col].to_list()], dtype=pl.Boolean)


def set_modes(frame: pl.DataFrame, source: str, mode: Mode, spec: FusionSpec) -> pl.DataFrame:
    """`frame` with a `mode` column, its rows rewritten for their mode (flags, empty block, reasoning taken out
    for `non_thinking`) and their ids recomputed."""
    kind = row_kind(frame)
    thinking = row_is_thinking(frame).to_list()
    if mode == "thinking" and not all(thinking):
        raise FusionError(
            f"mix.sources.{source}.mode = thinking, but {thinking.count(False)} of its {frame.height} rows have no "
            "reasoning in their final answer; use mode: auto (rows decide), or curate them out"
        )
    modes = ["thinking" if t and mode != "non_thinking" else "non_thinking" for t in thinking]
    cols = ["chosen", "rejected"] if kind == "preference" else ["messages"]
    rows = frame.to_dicts()
    for row, m in zip(rows, modes):
        for col in cols:
            row[col] = _rewrite(row[col], m, spec)
        if kind == "preference":
            row["prompt"] = _flagged(row["prompt"], m, spec)
        row["id"] = content_id(row, kind)
    return pl.DataFrame(rows, schema=frame.schema).with_columns(pl.Series("mode", modes, dtype=pl.String))


def _flagged(text: str, mode: str, spec: FusionSpec) -> str:
    return f"{text} {FLAGS[mode]}" if spec.flags == "user" else text


def _rewrite(messages: list[dict[str, Any]], mode: str, spec: FusionSpec) -> list[dict[str, Any]]:
    out = [dict(m) for m in messages]
    last_user = max((i for i, m in enumerate(out) if m["role"] == "user"), default=None)
    if last_user is not None:
        out[last_user]["content"] = _flagged(out[last_user]["content"], mode, spec)
    if mode == "non_thinking":
        for m in out:
            if m["role"] == "assistant":
                m["reasoning_content"] = None
        if spec.empty_think and out and out[-1]["role"] == "assistant":
            out[-1]["reasoning_content"] = ""
    return out


def fuse_draws(distinct: pl.DataFrame, share: float | None, rng: np.random.Generator) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Take draws (`__times`) from the side over its share until thinking rows make `share` of the draws; return
    the draws left (rows drawn 0 times removed) and the record of both sides before and after."""
    thinking = (distinct["mode"] == "thinking").to_numpy()
    times = distinct["__times"].to_numpy().copy()
    before = _sides(distinct["source"].to_list(), thinking, times)
    t, n = int(times[thinking].sum()), int(times[~thinking].sum())
    if share is not None and t + n:
        keep_t = t if share == 1 or t <= share * (t + n) else int(round(share * n / (1 - share)))
        keep_n = n if share == 0 or n <= (1 - share) * (t + n) else int(round((1 - share) * t / share))
        for side, keep in ((thinking, keep_t), (~thinking, keep_n)):
            times[side] = _thin(times[side], keep, rng)
    after = _sides(distinct["source"].to_list(), thinking, times)
    out = distinct.with_columns(pl.Series("__times", times, dtype=pl.Int64)).filter(pl.col("__times") > 0)
    total = after["thinking"] + after["non_thinking"]
    record = {"asked_thinking_share": share, "before": before, "after": after,
              "thinking_share": round(after["thinking"] / total, 6) if total else None}
    return out, record


def _thin(times: np.ndarray, keep: int, rng: np.random.Generator) -> np.ndarray:
    """Keep `keep` of the draws (each row repeated `times`), chosen at random without replacement."""
    draws = np.repeat(np.arange(times.size), times)
    if keep >= draws.size:
        return times
    kept = rng.choice(draws.size, size=keep, replace=False)
    return np.bincount(draws[kept], minlength=times.size).astype(np.int64)


def _sides(sources: list[str], thinking: np.ndarray, times: np.ndarray) -> dict[str, Any]:
    by_source: dict[str, dict[str, int]] = {}
    for s, t, k in zip(sources, thinking, times):
        d = by_source.setdefault(s, {"thinking": 0, "non_thinking": 0})
        d["thinking" if t else "non_thinking"] += int(k)
    return {"thinking": int(times[thinking].sum()), "non_thinking": int(times[~thinking].sum()),
            "by_source": dict(sorted(by_source.items()))}
