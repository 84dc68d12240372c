"""A recipe's `rejection_sampling` run: N sampled answers per problem, verified, and written as a part of the mix:
the correct traces (SFT rows) or correct-vs-wrong pairs of the same problem (preference rows).

    rejection_sampling:
      - name: reasoning_pairs
        prompts: problems                     # generators or sources of prompt rows with meta.ground_truth
        responders:
          - {n: 4, temperature: 0.8, thinking: {max_reasoning_tokens: 64, max_answer_tokens: 16}}
        rejection: {chosen: shortest, rejected: closest}    # alignmix.synth.rejection.RejectionConfig
        output: pairs                         # or sft: the correct traces

Three steps, each with its record in `out_dir`: the answers (`alignmix.synth.responses`: stats/responses.json,
rejected/responses.parquet for empty or malformed traces), the verdicts and pairing
(`alignmix.synth.rejection.rejection_sample`: stats/rejection_sampling.json; every sample that is not a correct
trace goes to rejected/rejection_sampling.parquet with its verdict as the reason), and the output rows in data/.
Sample counts add up: answers asked = responses kept + dropped; responses kept = correct + dropped by verdict.
A run whose problems all came out right (or all wrong) makes no pair, and its stats say how many problems had
which outcome, so "no pairs" is never silent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field

from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.schema import empty_frame
from alignmix.pipeline.store import MixStore, fingerprint, write_shards
from alignmix.synth.batches import stage_rows
from alignmix.synth.config import PreferencesConfig, Responder
from alignmix.synth.rejection import RejectionConfig, RejectionResult, rejection_sample
from alignmix.synth.responses import generate_responses, load_prompts

STAGE = "rejection_sampling"
VERSION = "rejection-sampling-v1"
# The verify verdict of a sample that is not kept, as the reason it was dropped.
REASONS = {"wrong": "wrong_answer", "truncated": "truncated_reasoning", "malformed": "malformed_reasoning",
           "no_answer": "unverifiable", "no_truth": "unverifiable", "timeout": "unverifiable"}


class RejectionSamplingConfig(StrictModel):
    name: str = Field(description="the part's name: the source of its rows in the mix")
    prompts: str | list[str] = Field(description="the generators or sources whose prompt rows are the problems")
    seed: int = 0
    limit: int | None = Field(None, gt=0, description="use at most this many problems")
    prompts_per_batch: int = Field(8, gt=0, description="problems per written (resumable) batch")
    responders: list[Responder] = Field(min_length=1, description="how the samples are drawn (n per responder)")
    rejection: RejectionConfig = Field(default_factory=RejectionConfig, description="verification and pairing")
    output: Literal["pairs", "sft"] = Field("pairs", description="the part's rows: pairs, or the correct traces")

    def prompt_names(self) -> list[str]:
        return [self.prompts] if isinstance(self.prompts, str) else list(self.prompts)


def run_rejection_sampling(prompts: Any, spec: dict[str, Any] | RejectionSamplingConfig, out_dir: str | Path,
                           *, progress: bool = False) -> dict[str, Any]:
    """Sample, verify and pair into `out_dir` (see the module docstring); return the stage's stats. A finished
    run with the same config and problems returns its stats at once; an interrupted one resumes its sampling."""
    cfg = spec if isinstance(spec, RejectionSamplingConfig) else RejectionSamplingConfig.model_validate(spec)
    problems = load_prompts(prompts, cfg.limit)
    store = MixStore(out_dir)
    fp = fingerprint(VERSION, cfg.model_dump(mode="json"), problems["prompt_id"].to_list())
    if store.is_done(STAGE, fp):
        return store.read_stats(STAGE)
    sampling = PreferencesConfig(name=cfg.name, seed=cfg.seed, prompts_per_batch=cfg.prompts_per_batch,
                                 responders=cfg.responders)
    responses = generate_responses(problems, sampling, out_dir, progress=progress, write_data=False)
    samples = stage_rows(out_dir, "responses")
    samples = samples if samples is not None else empty_frame("sft")
    result = rejection_sample(samples, cfg.rejection.model_copy(update={"source": cfg.name}))
    rows = result.pairs if cfg.output == "pairs" else result.sft
    kind = "preference" if cfg.output == "pairs" else "sft"
    shards = write_shards(rows if rows.height else empty_frame(kind), store.data_dir, "train", 100_000)
    dropped = _dropped(samples, result)
    store.write_rejected(STAGE, dropped)
    stats = {
        "stage": STAGE, "name": cfg.name, "output": cfg.output, "kind": kind,
        "rows_in": samples.height, "rows_kept": result.sft.height,
        "dropped": {r: int(n) for r, n in dropped.group_by("drop_reason").len().sort("drop_reason").iter_rows()},
        "output_rows": rows.height, "problems": problems.height, "answers_asked": responses["rows_in"],
        "rejection": result.stats, "config": cfg.model_dump(mode="json"),
        "why_no_pairs": _why_no_pairs(result.stats) if cfg.output == "pairs" and not rows.height else None,
    }  # fmt: skip
    store.mark_done(STAGE, fp, stats, [s["file"] for s in shards] + [f"rejected/{STAGE}.parquet"])
    return store.read_stats(STAGE)


def _dropped(samples: pl.DataFrame, result: RejectionResult) -> pl.DataFrame:
    """The samples that are not kept correct traces, with their verdict as the reason (`not_kept`: a correct
    trace left out by `keep: shortest`)."""
    if samples.is_empty():
        return samples.with_columns(*(pl.lit(None, pl.String).alias(c) for c in ("drop_stage", "drop_reason", "drop_detail")))
    scored = result.samples.filter(~pl.col("id").is_in(result.sft["id"].implode()))
    return scored.select(
        *samples.columns,
        pl.lit(STAGE).alias("drop_stage"),
        pl.col("verdict").replace_strict(REASONS, default="not_kept").alias("drop_reason"),
        pl.concat_str([pl.col("verdict"), pl.col("extracted_answer").fill_null("-")], separator=": ").alias("drop_detail"),
    )


def _why_no_pairs(stats: dict[str, Any]) -> str:
    outcome = stats.get("problems_by_outcome", {})
    return (f"no problem had both a correct and a wrong trace: {outcome.get('all_correct', 0)} all correct, "
            f"{outcome.get('all_wrong', 0)} all wrong, {outcome.get('no_verdict', 0)} with neither (truncated, "
            f"malformed or no answer) of {stats.get('problems', 0)} problems; sample more (n), or change the "
            "problems' difficulty")
