"""Preference pairs end to end: prompts -> N responses -> judge ratings -> UltraFeedback binarization.

The judge is the LLM judge (1-5 ratings per aspect) or a reward model (`judge: {kind: reward_model, ...}`: one
score per response); either way the ratings are meta.judge.rating and binarization reads them the same way.

    <out>/data/train-*.parquet        preference rows (score_chosen/score_rejected = mean ratings)
    <out>/rejected/responses.parquet  empty or duplicate responses
    <out>/rejected/binarize.parquet   prompts without a pair (score_tie, judge_unparseable, ...)
    <out>/stats/{responses,judge,binarize}.json
    <out>/batches/...                 per-batch intermediate results (what a resumed run skips)

    >>> build_preferences("out/magpie", {"responders": [{"temperature": 0.3}, {"temperature": 1.0}]},
    ...                   "out/prefs")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.stage import histogram
from alignmix.pipeline.store import MixStore, fingerprint, write_shards
from alignmix.synth.config import PreferencesConfig, RewardModelJudgeConfig
from alignmix.synth.batches import stage_rows
from alignmix.synth.judge import Judge, judge_responses
from alignmix.synth.binarize import BinarizeStageConfig, Binarizer, prompt_groups, to_preference_rows
from alignmix.synth.progress import maybe_progress
from alignmix.synth.responses import generate_responses

STAGE = "binarize"
VERSION = "binarize-v2"  # v2: meta.finish_reason and the shared pairwise record


def _rated_rows(source: Any) -> pl.DataFrame:
    """Rated response rows from a frame, or a directory the judge wrote (its batches, else its data/)."""
    if isinstance(source, pl.DataFrame):
        return source
    rows = stage_rows(source, "judge")
    if rows is None:
        raise FileNotFoundError(f"{source} holds no judged responses: run `alignmix judge` first")
    return rows


def binarize_ratings(
    rated: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path, *, progress: bool = False,
    rows_per_shard: int = 100_000,
) -> dict[str, Any]:
    """Rated response rows (a frame, or a directory the judge wrote) -> preference rows in `out_dir`/data."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    rows = _rated_rows(rated)
    store = MixStore(out_dir)
    stage_cfg = BinarizeStageConfig(rejected=cfg.binarize.rejected, seed=cfg.seed if cfg.binarize.seed is None else cfg.binarize.seed,
                                    score_range=None if isinstance(cfg.judge, RewardModelJudgeConfig) else (1.0, 5.0))
    fp = fingerprint(VERSION, stage_cfg.model_dump(), cfg.judge.pairwise, cfg.name, sorted(rows["id"].to_list()),
                     sorted(rows["meta"].to_list()))  # fmt: skip
    if store.is_done(STAGE, fp):
        return store.read_stats(STAGE)
    start = time.perf_counter()
    groups = prompt_groups(rows)
    kept, rejected, stats = Binarizer(stage_cfg).run(groups)
    pairs, errors = to_preference_rows(kept, cfg.name, stage_cfg.rejected)
    extra: dict[str, Any] = {}
    if cfg.judge.pairwise and pairs.height:
        pairs, extra = _pairwise(pairs, cfg, progress)
    shards = write_shards(pairs, store.data_dir, rows_per_shard=rows_per_shard)
    store.write_rejected(STAGE, rejected)
    out = stats.model_dump()
    out.update(
        seconds=round(time.perf_counter() - start, 6),
        pairs=pairs.height,
        prompts=groups.height,
        responses=rows.height,
        unrated_responses=sum(r["rating"] is None for rs in groups["responses"].to_list() for r in rs),
        row_errors=errors,
        **extra,
    )
    if pairs.height:
        out["distributions"]["score_chosen"] = histogram(pairs["score_chosen"], bins=8, range_=stage_cfg.score_range)
        out["distributions"]["score_rejected"] = histogram(pairs["score_rejected"], bins=8, range_=stage_cfg.score_range)
    store.mark_done(STAGE, fp, out, [s["file"] for s in shards] + [f"rejected/{STAGE}.parquet"])
    return store.read_stats(STAGE)


def _pairwise(pairs: pl.DataFrame, cfg: PreferencesConfig, progress: bool) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Judge every pair in both orders; record the verdicts in meta.pairwise and count how many survive the swap."""
    judge = Judge(cfg.judge)
    items = [(p, c[-1]["content"], r[-1]["content"]) for p, c, r in pairs.select("prompt", "chosen", "rejected").iter_rows()]
    with maybe_progress("pairwise judge", 2 * len(items), progress) as bar:
        verdicts = judge.compare(items, bar)
    metas = []
    for meta, v in zip(pairs["meta"].to_list(), verdicts):
        m = orjson.loads(meta)
        m["pairwise"] = v
        metas.append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode())
    counts = {
        "pairwise_judged": len(verdicts),
        "pairwise_consistent": sum(v["consistent"] is True for v in verdicts),
        "pairwise_inconsistent": sum(v["consistent"] is False for v in verdicts),
        "pairwise_unparseable": sum(v["consistent"] is None for v in verdicts),
        "pairwise_agrees_with_ratings": sum(v["agrees"] is True for v in verdicts),
    }
    return pairs.with_columns(pl.Series("meta", metas, dtype=pl.String)), counts


def build_preferences(
    prompts: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path, *, progress: bool = False,
    rows_per_shard: int = 100_000,
) -> dict[str, Any]:
    """The recipe's `preferences` section: responses, judge and binarization into `out_dir`, each resumable.

    `prompts`: a directory alignmix wrote (prompt, SFT or preference rows), a polars frame of such rows or with a
    `prompt` column, or a list of strings. Returns {"responses": stats, "judge": stats, "binarize": stats}."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    responses = generate_responses(prompts, cfg, out_dir, progress=progress, write_data=False)
    judged = judge_responses(out_dir, cfg, out_dir, progress=progress, write_data=False)
    binarized = binarize_ratings(out_dir, cfg, out_dir, progress=progress, rows_per_shard=rows_per_shard)
    return {"responses": responses, "judge": judged, "binarize": binarized}
