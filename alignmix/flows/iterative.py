"""The `iterative-dpo` flow: rounds of on-policy DPO over the recipe's `iterative:` section.

    iterative-dpo(recipe)
      ├─ held-out pairs                 start policy: sample → judge → pair → curate      rounds/heldout/
      └─ round K = 1 … rounds           skipped when finished with the same fingerprint  rounds/round-K/
          ├─ sample-round               N answers per prompt from the policy after K-1, judged, paired
          ├─ curate-round               the recipe's curation stages on the new pairs
          ├─ train-round                DPO from round K-1's adapter, reference fixed at the start model
          └─ win-rate                   the new policy against the previous one on the held-out prompts

What each step is given and what a round records is decided in `alignmix.pipeline.rounds`; the steps are
synth's, filters' and training's own functions. `build-ultrafeedback-mix` runs this flow when the recipe has the
section and mixes the rounds' curated pairs.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from alignmix.flows.build import _progress_to_run_log, generate_task, read_source_task
from alignmix.flows.recipes import resolve_recipe
from alignmix.pipeline import curation
from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.rounds import (
    RoundPlan,
    copy_records,
    mark_round,
    response_figures,
    round_done,
    round_record,
    split_prompts,
    write_dpo_data,
)
from alignmix.pipeline.store import MixStore, fingerprint, sha256_file

GENERATION_RETRIES = 1


def _round_dir(plan: RoundPlan, k: int):
    return plan.dir(k) if k else plan.heldout_dir


@task(name="sample-round", retries=GENERATION_RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def sample_task(recipe: Recipe, plan: RoundPlan, k: int, prompts: pl.DataFrame) -> dict[str, Any]:
    """Round k's answers from the current policy, rated by the judge and paired (k = 0: the held-out pairs)."""
    from alignmix.synth.preferences import build_preferences

    with _progress_to_run_log():
        return build_preferences(prompts, plan.samples_spec(k), _round_dir(plan, k) / "samples",
                                 rows_per_shard=recipe.output.rows_per_shard)


@task(name="curate-round", cache_policy=NO_CACHE)
def curate_task(recipe: Recipe, plan: RoundPlan, k: int) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The recipe's curation stages on round k's pairs: kept pairs in data/, drops in rejected/, stats/."""
    from alignmix.filters.apply import curate
    from alignmix.filters.registry import build_stage

    out = _round_dir(plan, k)
    stats = curate(MixStore(out / "samples").read(), out, [build_stage(s) for s in recipe.curation],
                   recipe.output.rows_per_shard)
    copy_records(out / "samples", out)
    return MixStore(out).read(), [s.model_dump(mode="json") for s in stats]


@task(name="train-round", cache_policy=NO_CACHE)
def train_task(plan: RoundPlan, k: int, pairs: pl.DataFrame, heldout: pl.DataFrame) -> dict[str, Any]:
    """DPO on round k's pairs from round k-1's adapter; the held-out pairs are its test split."""
    from alignmix.training import train_dpo
    from alignmix.training.config import DPOTrainConfig
    from alignmix.training.outputs import Layout, check_resumable

    if pairs.is_empty():
        raise RuntimeError(f"round {k}: no pair survived pairing and curation (see {plan.dir(k)}/stats); fix: raise "
                           "iterative.prompts_per_round or samples_per_prompt, or relax the curation stages")
    config = DPOTrainConfig.model_validate(plan.dpo_spec(k))
    try:
        check_resumable(config, Layout(plan.dir(k)), "dpo")
    except ValueError:  # checkpoints of a round trained under other settings: this round starts over
        config = config.model_copy(update={"resume": False})
    with _progress_to_run_log():
        return train_dpo(write_dpo_data(plan, k, pairs, heldout), plan.dir(k), config)


@task(name="win-rate", retries=GENERATION_RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def win_rate_task(plan: RoundPlan, k: int, heldout_prompts: pl.DataFrame) -> dict[str, Any]:
    """The judge's win rate of the policy after round k over the one before, on the held-out prompts."""
    from alignmix.synth.winrate import compare_policies

    with _progress_to_run_log():
        return compare_policies(heldout_prompts, plan.answers_spec(k), plan.dir(k) / "answers")


def _prompts(recipe: Recipe, part_dirs: dict[str, str]) -> pl.DataFrame:
    """Every prompt of the parts the section names (default: every generator and every source of prompt rows),
    reading or generating the parts not built yet."""
    from alignmix.synth.responses import load_prompts

    missing = [s.name for s in recipe.sources if s.name not in part_dirs]
    part_dirs.update({n: read_source_task(recipe, n) for n in missing})
    named = recipe.iterative.prompt_names() or curation.prompt_parts(recipe.model_copy(update={"preferences": None}),
                                                                     part_dirs)
    part_dirs.update({n: generate_task(recipe, n) for n in named if n not in part_dirs})
    frames = [MixStore(part_dirs[n]).read() for n in named]
    return load_prompts(pl.concat(frames, how="diagonal_relaxed") if frames else [])


@flow(name="iterative-dpo", log_prints=False)  # no print capture under TRL: see train_sft_flow in build.py
def iterative_dpo(recipe: str, part_dirs: dict[str, str] | None = None) -> dict[str, str]:
    """Rounds of sample → judge → pair → curate → DPO from the recipe's `iterative:` section, each resumable;
    returns {"round-K": folder} (each folder holds its curated pairs in data/, a part of the mix)."""
    r = resolve_recipe(recipe)
    log = get_run_logger()
    if r.iterative is None:
        log.info("the recipe has no `iterative:` section; nothing to do")
        return {}
    plan = RoundPlan(r.iterative, r.out_dir(), r.seed, r.preferences, r.curation)
    held, rounds = split_prompts(_prompts(r, dict(part_dirs or {})), r.iterative, r.seed)
    sample_task(r, plan, 0, held)
    heldout, _ = curate_task(r, plan, 0)
    previous = fingerprint([sha256_file(f) for f in MixStore(plan.heldout_dir).shard_files()])
    log.info("iterative: %s held-out prompts (%s pairs), %s rounds of %s prompts", held.height, heldout.height,
             len(rounds), rounds[0].height)
    for k, prompts in enumerate(rounds, start=1):
        previous = _round(r, plan, k, prompts, held, heldout, previous)
    return {f"round-{k}": str(plan.dir(k)) for k in range(1, len(rounds) + 1)}


def _round(r: Recipe, plan: RoundPlan, k: int, prompts: pl.DataFrame, held: pl.DataFrame, heldout: pl.DataFrame,
           previous: str) -> str:
    from alignmix.synth.batches import stage_rows

    log = get_run_logger()
    round_fp = plan.fingerprint(k, prompts["prompt_id"].to_list(), previous)
    if round_done(plan, k, round_fp):
        log.info("round %s: finished in an earlier run, skipped", k)
        return round_fp
    sampled = sample_task(r, plan, k, prompts)
    pairs, stages = curate_task(r, plan, k)
    dpo = train_task(plan, k, pairs, heldout)
    wins = win_rate_task(plan, k, held)
    samples = response_figures(stage_rows(plan.dir(k) / "samples", "responses"))
    steps = [sampled["responses"], sampled["judge"], sampled["binarize"], *stages]
    record = round_record(k, plan, steps, samples, pairs, dpo, wins)
    mark_round(plan, k, round_fp, record)
    log.info("round %s: %s pairs kept, held-out reward accuracy %s, win rate over round %s: %s", k, pairs.height,
             record["heldout"]["after"].get("reward_accuracy"), k - 1, wins["win_rate"])
    return round_fp
