"""Binarization the UltraFeedback way: per prompt, chosen = the response with the highest mean rating, rejected =
one of the strictly lower-rated responses (a seeded random one, or the lowest). Responses without a rating
(unparseable judgements, non-finite rewards) take no part; a reward model's scores are ratings like any other.
A prompt is rejected when no pair can be formed:

    score_tie            every rated response has the same rating (a pair would teach nothing)
    judge_unparseable    fewer than 2 rated responses because judgements could not be parsed
    too_few_responses    fewer than 2 responses in the first place

The stage works on one row per prompt (`prompt_groups` builds them from rated response rows) and follows the
stage contract; `to_preference_rows` turns its kept rows into preference rows.

    >>> kept, rejected, stats = Binarizer({"rejected": "lowest"}).run(groups)          # doctest: +SKIP
"""

from __future__ import annotations

import random
from typing import Any, Literal

import orjson
import polars as pl

from alignmix.pipeline.pairwise import finish_reasons
from alignmix.pipeline.schema import RowError, preference_row, to_frame
from alignmix.pipeline.stage import Stage, StageConfig, histogram
from alignmix.synth.backends import request_seed

RESPONSE = pl.Struct({"text": pl.String, "rating": pl.Float64, "meta": pl.String})
GROUP_SCHEMA = {
    "id": pl.String,
    "prompt": pl.String,
    "messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String})),
    "responses": pl.List(RESPONSE),
}


class BinarizeStageConfig(StageConfig):
    rejected: Literal["random", "lowest"] = "random"
    seed: int = 0
    # The ratings' scale: the LLM judge's 1-5. None (a reward model's unbounded scores): histograms span the data.
    score_range: tuple[float, float] | None = (1.0, 5.0)


def choose_pair(ratings: list[float | None], mode: str, rng: random.Random) -> tuple[int, int] | tuple[str, str]:
    """(chosen index, rejected index), or (reason, detail) when no pair exists.

    >>> choose_pair([3.0, None, 4.5, 2.0], "lowest", random.Random(0))
    (2, 3)
    >>> choose_pair([4.0, 4.0, None], "random", random.Random(0))
    ('score_tie', 'all 2 rated responses scored 4.0')
    """
    rated = [(i, r) for i, r in enumerate(ratings) if r is not None]
    if len(rated) < 2:
        missing = len(ratings) - len(rated)
        if missing:
            return "judge_unparseable", f"{len(rated)} of {len(ratings)} responses rated ({missing} unparseable)"
        return "too_few_responses", f"{len(ratings)} response(s)"
    best = max(r for _, r in rated)
    chosen = next(i for i, r in rated if r == best)  # the first of the best, as UltraFeedback's max() does
    lower = [(i, r) for i, r in rated if r < best]
    if not lower:
        return "score_tie", f"all {len(rated)} rated responses scored {best}"
    if mode == "lowest":
        worst = min(r for _, r in lower)
        return chosen, next(i for i, r in lower if r == worst)
    return chosen, rng.choice(lower)[0]


class Binarizer(Stage[BinarizeStageConfig]):
    name = "binarize"
    config_class = BinarizeStageConfig

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        chosen, rejected, margin, reasons, details = [], [], [], [], []
        for pid, responses in zip(frame["id"].to_list(), frame["responses"].to_list()):
            ratings = [r["rating"] for r in responses]
            rng = random.Random(request_seed(self.config.seed, "binarize", pid))  # per prompt: order-independent
            pick = choose_pair(ratings, self.config.rejected, rng)
            if isinstance(pick[0], str):
                chosen.append(None), rejected.append(None), margin.append(None)
                reasons.append(pick[0]), details.append(pick[1])
            else:
                c, r = pick
                chosen.append(c), rejected.append(r), margin.append(ratings[c] - ratings[r])
                reasons.append(None), details.append(None)
        return frame.with_columns(
            pl.Series("chosen_index", chosen, dtype=pl.Int64),
            pl.Series("rejected_index", rejected, dtype=pl.Int64),
            pl.Series("score_margin", margin, dtype=pl.Float64),
            pl.Series("drop_reason", reasons, dtype=pl.String),
            pl.Series("drop_detail", details, dtype=pl.String),
        )

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        scale = self.config.score_range
        return {"score_margin": histogram(kept["score_margin"], bins=8, range_=(0, scale[1] - scale[0]) if scale else None)}


def prompt_groups(rated: pl.DataFrame) -> pl.DataFrame:
    """One row per prompt from rated response rows (meta.prompt_id, meta.response_index, meta.judge.rating)."""
    rows: dict[str, dict[str, Any]] = {}
    for messages, meta in zip(rated["messages"].to_list(), rated["meta"].to_list()):
        m = orjson.loads(meta)
        g = rows.setdefault(m["prompt_id"], {"id": m["prompt_id"], "prompt": messages[-2]["content"],
                                             "messages": messages[:-1], "responses": []})  # fmt: skip
        g["responses"].append((m["response_index"], {"text": messages[-1]["content"], "rating": m["judge"]["rating"], "meta": meta}))
    out = []
    for g in rows.values():
        g["responses"] = [r for _, r in sorted(g["responses"], key=lambda x: x[0])]
        out.append(g)
    return pl.DataFrame(out, schema=GROUP_SCHEMA) if out else pl.DataFrame(schema=GROUP_SCHEMA)


def to_preference_rows(kept: pl.DataFrame, source: str, mode: str) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """Preference rows (prompt turns + one answer each; mean ratings as scores) with the judge's record in meta."""
    rows, errors = [], []
    for g in kept.iter_rows(named=True):
        responses = [dict(r, meta=orjson.loads(r["meta"])) for r in g["responses"]]
        c, r = responses[g["chosen_index"]], responses[g["rejected_index"]]
        judge = c["meta"]["judge"]
        meta = {
            "prompt_id": g["id"],
            "judge": {k: judge[k] for k in ("backend", "model", "aspects") if k in judge},
            "selection": mode,
            "chosen_index": g["chosen_index"],
            "rejected_index": g["rejected_index"],
            "chosen": _side(c),
            "rejected": _side(r),
            "finish_reason": finish_reasons(c["meta"], r["meta"]),
            "all_scores": [
                {"index": i, "responder": x["meta"].get("responder"), "rating": x["rating"], "ratings": x["meta"]["judge"]["ratings"]}
                for i, x in enumerate(responses)
            ],
        }
        try:
            rows.append(preference_row(
                g["prompt"], g["messages"] + [{"role": "assistant", "content": c["text"]}],
                g["messages"] + [{"role": "assistant", "content": r["text"]}],
                score_chosen=c["rating"], score_rejected=r["rating"], source=source, source_id=g["id"], meta=meta,
            ))  # fmt: skip
        except RowError as err:
            errors.append({"id": g["id"], "reason": err.reason, "detail": err.detail()})
    return to_frame(rows, "preference"), errors


def _side(response: dict[str, Any]) -> dict[str, Any]:
    m, j = response["meta"], response["meta"]["judge"]
    return {
        "responder": m.get("responder"),
        "model": m.get("model"),
        "finish_reason": m.get("finish_reason"),
        "rating": j["rating"],
        "ratings": j["ratings"],
        "rationales": j["rationales"],
        "raw": j["raw"],
    }
