"""Rejection sampling: N sampled traces per problem, each verified against the problem's ground truth; the correct
ones kept for SFT, and correct-vs-wrong traces of the same problem paired as reasoning preference data.

    result = rejection_sample(samples, RejectionConfig(chosen="shortest", rejected="closest"))
    result.sft      # SFT rows: the correct traces (all, or the shortest per problem)
    result.pairs    # preference rows: a correct trace against a wrong one of the same problem
    result.stats    # problems, samples, verdicts, problems all right / all wrong / mixed, rows made
    result.samples  # every sample with its `verdict` and `extracted_answer`

`samples` are SFT rows whose final assistant turn is one sampled trace (its `reasoning_content` and answer) and
whose `meta.ground_truth` holds the answer, as the verify stage reads them. Rows with the same prompt turns (every
turn before the final answer) are one problem. A trace's length is the words of its reasoning and its answer.

Pairing, per problem with both kinds of trace, up to `pairs_per_problem` pairs, no trace used twice:

    chosen     shortest (default: the most economical correct reasoning), longest, or random correct trace
    rejected   closest (default: the wrong trace nearest the chosen one in length, so the pair differs in
               correctness more than in length), shortest, longest, or random wrong trace

A worked example: traces of 120 (correct), 300 (correct), 90 (wrong) and 400 (wrong) words make one pair, 120
against 90. Ties break on the row id, and `random` draws with `seed` and the problem, so the same samples give
the same pairs. Each pair records why in `meta.rejection`:

    {"rule": "shortest correct vs closest wrong", "problem": "<key>", "samples": 4, "correct": 2, "wrong": 2,
     "chosen": {"id", "source", "source_id", "words", "verdict", "extracted"}, "rejected": {...}}
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl
from pydantic import Field

from alignmix.filters.verify import Verify, VerifyConfig
from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.reasoning import answer_of
from alignmix.pipeline.schema import RowError, last_user_turn, preference_row, row_kind, to_frame

Pick = Literal["shortest", "longest", "random"]


class RejectionConfig(StrictModel):
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="how traces are checked (the verify stage)")
    keep: Literal["all", "shortest"] = Field(
        "all", description="correct traces kept for SFT: all of them, or the shortest of each problem"
    )
    chosen: Pick = Field("shortest", description="which correct trace a pair takes")
    rejected: Pick | Literal["closest"] = Field(
        "closest", description="which wrong trace a pair takes; closest: nearest the chosen one in length"
    )
    rejected_verdicts: list[Literal["wrong", "truncated", "no_answer"]] = Field(
        default_factory=lambda: ["wrong"],
        description="verdicts a rejected trace may have: wrong answers only by default; adding truncated or "
        "no_answer pairs a correct trace against an unfinished one (which teaches brevity as much as correctness)",
    )
    pairs_per_problem: int = Field(1, ge=1, description="most pairs made from one problem")
    source: str = Field("rejection_pairs", min_length=1, description="the `source` of the pairs")
    seed: int = Field(0, description="seed of the random picks")


@dataclass
class RejectionResult:
    sft: pl.DataFrame
    pairs: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    # every sample as given, with the verify stage's `verdict` and `extracted_answer` (what was not kept, and why)
    samples: pl.DataFrame | None = None


def problem_key(messages: list[dict[str, Any]]) -> str:
    """The problem a sample answers: a hash of its prompt turns (every turn before the final answer)."""
    turns = [[m["role"], (m.get("content") or "").strip()] for m in messages[:-1]]
    return hashlib.blake2b(orjson.dumps(turns), digest_size=8).hexdigest()


def trace_words(message: dict[str, Any]) -> int:
    """Words of a trace: its reasoning and its answer."""
    try:
        answer = answer_of(message)
    except RowError:
        answer = message.get("content") or ""
    return len((message.get("reasoning_content") or "").split()) + len(answer.split())


def _order(members: list[int], words: list[int], ids: list[str], pick: str, rng: np.random.Generator) -> list[int]:
    by_length = sorted(members, key=lambda i: (words[i], ids[i]))
    if pick == "longest":
        return sorted(members, key=lambda i: (-words[i], ids[i]))
    if pick == "random":
        return [by_length[k] for k in rng.permutation(len(by_length))]
    return by_length


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(key, 16)])


def rejection_sample(samples: pl.DataFrame, config: RejectionConfig | dict[str, Any] | None = None) -> RejectionResult:
    """Verify every sample, keep the correct ones for SFT and pair correct against wrong per problem (see the
    module docstring). Raises ValueError for rows that are not SFT rows."""
    cfg = config if isinstance(config, RejectionConfig) else RejectionConfig(**(config or {}))
    if samples.height and row_kind(samples) != "sft":
        raise ValueError(f"rejection sampling takes SFT rows (one sampled trace each), got {row_kind(samples)} rows")
    scored = Verify(cfg.verify).score(samples) if samples.height else samples.with_columns(
        pl.lit(None, pl.String).alias("verdict"), pl.lit(None, pl.String).alias("extracted_answer"))
    messages = scored["messages"].to_list()
    ids, verdicts = scored["id"].to_list(), scored["verdict"].to_list()
    words = [trace_words(m[-1]) for m in messages]
    problems: dict[str, list[int]] = {}
    for i, m in enumerate(messages):
        problems.setdefault(problem_key(m), []).append(i)

    kept: list[int] = []
    pairs: list[dict[str, Any]] = []
    for key in sorted(problems):
        members = problems[key]
        correct = _order([i for i in members if verdicts[i] == "correct"], words, ids, cfg.chosen, _rng(cfg.seed, key))
        wrong = [i for i in members if verdicts[i] in cfg.rejected_verdicts]
        by_length = sorted(correct, key=lambda i: (words[i], ids[i]))
        kept += by_length[:1] if cfg.keep == "shortest" else sorted(correct, key=lambda i: ids[i])
        pairs += _pairs(key, members, correct, wrong, scored, words, verdicts, cfg)
    # rows in problem order, then by id: the same samples in any order give the same rows
    sft = _with_rejection_meta(scored, kept, problems, verdicts)
    pair_frame = to_frame(pairs, "preference")
    stats = _stats(scored, problems, verdicts, sft, pair_frame)
    return RejectionResult(sft, pair_frame, stats, scored.drop("drop_reason", "drop_detail", strict=False))


def _pairs(key: str, members: list[int], correct: list[int], wrong: list[int], scored: pl.DataFrame,
           words: list[int], verdicts: list[str], cfg: RejectionConfig) -> list[dict[str, Any]]:
    rng = _rng(cfg.seed + 1, key)
    ids = scored["id"].to_list()
    wrong = _order(wrong, words, ids, "random" if cfg.rejected == "random" else "shortest", rng)
    if cfg.rejected == "longest":
        wrong = wrong[::-1]
    out = []
    for c in correct[: cfg.pairs_per_problem]:
        if not wrong:
            break
        r = min(wrong, key=lambda i: (abs(words[i] - words[c]), words[i], ids[i])) if cfg.rejected == "closest" else wrong[0]
        wrong.remove(r)
        out.append(_pair_row(key, len(members), sum(verdicts[i] == "correct" for i in members), c, r, scored, words, cfg))
    return out


def _pair_row(key: str, samples: int, n_correct: int, c: int, r: int, scored: pl.DataFrame, words: list[int],
              cfg: RejectionConfig) -> dict[str, Any]:
    chosen, rejected = scored.row(c, named=True), scored.row(r, named=True)
    meta = orjson.loads(chosen["meta"] or "{}")

    def side(row: dict[str, Any], i: int) -> dict[str, Any]:
        return {"id": row["id"], "source": row["source"], "source_id": row["source_id"], "words": words[i],
                "verdict": row["verdict"], "extracted": row["extracted_answer"]}

    meta["rejection"] = {
        "rule": f"{cfg.chosen} correct vs {cfg.rejected} {'/'.join(cfg.rejected_verdicts)}",
        "problem": key, "samples": samples, "correct": n_correct, "wrong": samples - n_correct,
        "chosen": side(chosen, c), "rejected": side(rejected, r),
    }
    return preference_row(
        last_user_turn(chosen["messages"]), chosen["messages"], rejected["messages"], score_chosen=1.0,
        score_rejected=0.0, source=cfg.source, source_id=f"{key}:{chosen['id'][:12]}", meta=meta,
    )


def _with_rejection_meta(scored: pl.DataFrame, kept: list[int], problems: dict[str, list[int]],
                         verdicts: list[str]) -> pl.DataFrame:
    """The kept samples as SFT rows again (the verify columns dropped), `meta.rejection` saying why each was kept."""
    keys = {i: key for key, members in problems.items() for i in members}
    rows = scored[kept] if kept else scored.clear()
    metas = []
    for i, meta in zip(kept, rows["meta"].to_list()):
        members = problems[keys[i]]
        m = orjson.loads(meta or "{}")
        m["rejection"] = {"problem": keys[i], "samples": len(members),
                          "correct": sum(verdicts[j] == "correct" for j in members), "verdict": "correct"}
        metas.append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode())
    return rows.select("messages", "id", "source", "source_id").with_columns(pl.Series("meta", metas, dtype=pl.String))


def _stats(scored: pl.DataFrame, problems: dict[str, list[int]], verdicts: list[str], sft: pl.DataFrame,
           pairs: pl.DataFrame) -> dict[str, Any]:
    shapes = {"all_correct": 0, "all_wrong": 0, "mixed": 0, "no_verdict": 0}
    for members in problems.values():
        right = sum(verdicts[i] == "correct" for i in members)
        wrong = sum(verdicts[i] == "wrong" for i in members)
        shapes["mixed" if right and wrong else "all_correct" if right else "all_wrong" if wrong else "no_verdict"] += 1
    counts = scored.group_by("verdict").len().sort("verdict") if scored.height else pl.DataFrame()
    return {
        "samples": scored.height,
        "problems": len(problems),
        "verdicts": {v: int(n) for v, n in counts.iter_rows()} if scored.height else {},
        "problems_by_outcome": shapes,
        "sft_rows": sft.height,
        "pairs": pairs.height,
    }
