"""The flows: `build-ultrafeedback-mix` and its parts, each a thin Prefect flow over the libraries.

    build-ultrafeedback-mix(recipe)
      ├─ generate-magpie / generate-self-instruct      one task per generator        work/generated/<name>/
      ├─ read sources                                  one task per source           work/sources/<name>/
      ├─ build-preferences                             responses → judge → pairs     work/preferences/<name>/
      ├─ iterative-dpo                                 rounds of on-policy DPO       rounds/round-<k>/
      ├─ rejection-sampling                            N samples → verify → pairs    work/rejection/<name>/
      ├─ curate                                        per stage: one task per shard (scores), then decide
      ├─ mix + card                                    data/, manifest.json, README.md, card.html, artifacts
      └─ train-sft / train-dpo                         when the recipe has a `training:` section

Every part writes under `<output.dir>/<recipe name>/` and records a fingerprint of its inputs and config, so a
killed run resumes where it stopped and reruns give the same bytes. Every flow takes one parameter, the recipe
(a path, a bundled recipe's name, or inline YAML).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from alignmix.flows.recipes import resolve_recipe
from alignmix.flows.runner import task_runner_for
from alignmix.filters.apply import curate_recipe
from alignmix.filters.near_dedup import NearDedup
from alignmix.pipeline import curation
from alignmix.pipeline.progress import progress_log
from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.stage import Stage
from alignmix.pipeline.store import MixStore

# Retries where a retry can help: reading sources (network file systems, the Hub) and generation (a remote
# endpoint, a worker lost). Curation and mixing are deterministic: a retry would fail the same way.
IO_RETRIES = 2
GENERATION_RETRIES = 1
# Seconds between progress lines ("magpie demo: 1,024/20,000 requests, 412 tok/s, ETA 41m") in the run log.
PROGRESS_EVERY = float(os.environ.get("ALIGNMIX_PROGRESS_SECONDS", "30"))


def _progress_to_run_log():
    """Progress of everything tracked inside the `with`, as a line in this run's log every PROGRESS_EVERY s."""
    return progress_log(get_run_logger().info, every=PROGRESS_EVERY)


# --- tasks --------------------------------------------------------------------------------------------------


@task(name="read-source", retries=IO_RETRIES, retry_delay_seconds=2, cache_policy=NO_CACHE)
def read_source_task(recipe: Recipe, name: str) -> str:
    out, stats = curation.ingest_part(recipe, name)
    get_run_logger().info("source %s: %s rows in, %s kept", name, stats.get("rows_in"), stats.get("rows_kept"))
    return str(out)


@task(name="generate", retries=GENERATION_RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def generate_task(recipe: Recipe, name: str) -> str:
    from alignmix.synth import run_generator

    spec = next(g for g in recipe.generators if g.get("name") == name)
    out = curation.work_dir(recipe) / "generated" / name
    try:
        with _progress_to_run_log():
            stats = run_generator({"seed": recipe.seed, **spec}, out)
    except Exception as err:
        raise RuntimeError(f"stage generate failed on generator {name!r} ({spec.get('kind')}): {err}") from err
    curation.publish_part(out, recipe.out_dir())
    get_run_logger().info("generator %s: %s rows kept", name, stats.get("rows_kept"))
    return str(out)


@task(name="build-preferences", retries=GENERATION_RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def preferences_task(recipe: Recipe, prompt_dirs: list[str]) -> str:
    from alignmix.synth import build_preferences

    spec = dict(recipe.preferences or {})
    spec.pop("prompts", None)
    spec.setdefault("seed", recipe.seed)
    out = curation.work_dir(recipe) / "preferences" / spec.get("name", "preferences")
    frames = [MixStore(d).read() for d in prompt_dirs]
    prompts = pl.concat(frames, how="diagonal_relaxed") if frames else None
    try:
        with _progress_to_run_log():
            stats = build_preferences(prompts, spec, out)
    except Exception as err:
        raise RuntimeError(f"stage build-preferences failed on prompts from {prompt_dirs}: {err}") from err
    curation.publish_part(out, recipe.out_dir())
    binarized = stats.get("binarize", {})
    get_run_logger().info(
        "preferences: %s prompts -> %s pairs, dropped %s", binarized.get("rows_in"), binarized.get("rows_kept"),
        binarized.get("dropped") or "none",
    )
    return str(out)


@task(name="rejection-sampling", retries=GENERATION_RETRIES, retry_delay_seconds=5, cache_policy=NO_CACHE)
def rejection_sampling_task(recipe: Recipe, name: str, prompt_dirs: list[str]) -> str:
    from alignmix.synth.rejection_sampling import run_rejection_sampling

    spec = next(s for s in recipe.rejection_sampling if s.get("name") == name)
    out = curation.work_dir(recipe) / "rejection" / name
    prompts = pl.concat([MixStore(d).read() for d in prompt_dirs], how="diagonal_relaxed")
    try:
        with _progress_to_run_log():
            stats = run_rejection_sampling(prompts, {"seed": recipe.seed, **spec}, out)
    except Exception as err:
        raise RuntimeError(f"stage rejection-sampling failed on {name!r}: {err}") from err
    curation.publish_part(out, recipe.out_dir())
    get_run_logger().info("rejection sampling %s: %s samples, %s correct, %s %s rows%s", name, stats["rows_in"],
                          stats["rows_kept"], stats["output_rows"], stats["output"],
                          f" ({stats['why_no_pairs']})" if stats.get("why_no_pairs") else "")
    return str(out)


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard_task(stage: Stage, shard: pl.DataFrame) -> pl.DataFrame:
    """Score one shard with a row-local stage (its measurements and decisions; nothing dropped yet)."""
    return stage.fresh().score(shard)


@task(name="sketch-shard", cache_policy=NO_CACHE)
def sketch_shard_task(stage: NearDedup, shard: pl.DataFrame) -> Any:
    """MinHash signatures (and shingle hashes) of one shard."""
    return stage.fresh().sketch(shard)


def _results(futures: Any, shards: list[pl.DataFrame], shard_done: Any) -> list[Any]:
    out = []
    for f, shard in zip(futures, shards):
        out.append(f.result())
        shard_done(shard.height)
    return out


def _score_on_tasks(stage: Stage, shards: list[pl.DataFrame], shard_done: Any = lambda rows: None
                    ) -> list[pl.DataFrame]:
    return _results(score_shard_task.map(unmapped(stage), shards), shards, shard_done)


def _sketch_on_tasks(stage: Stage, shards: list[pl.DataFrame], shard_done: Any = lambda rows: None) -> list[Any]:
    return _results(sketch_shard_task.map(unmapped(stage), shards), shards, shard_done)


@task(name="mix", cache_policy=NO_CACHE)
def mix_task(recipe: Recipe, curated_path: str) -> dict[str, Any]:
    return curation.mix_curated(recipe, curated_path)


@task(name="card", cache_policy=NO_CACHE)
def card_task(recipe: Recipe) -> dict[str, Any]:
    from alignmix.data_cards.card import write_card

    return write_card(recipe.out_dir())


# --- part flows ---------------------------------------------------------------------------------------------


def _generators(recipe: Recipe, kind: str | None) -> list[str]:
    return [g["name"] for g in recipe.generators if kind is None or g.get("kind") == kind]


def _run_generators(recipe: Recipe, kind: str | None) -> dict[str, str]:
    # One after another: each generator already uses the whole machine (all cores, or the whole GPU with vLLM).
    return {n: generate_task(recipe, n) for n in _generators(recipe, kind)}


@flow(name="generate-magpie", log_prints=True)
def generate_magpie(recipe: str) -> dict[str, str]:
    """Run the recipe's MAGPIE generators; return their output folders."""
    return _run_generators(resolve_recipe(recipe), "magpie")


@flow(name="generate-self-instruct", log_prints=True)
def generate_self_instruct(recipe: str) -> dict[str, str]:
    """Run the recipe's Self-Instruct generators; return their output folders."""
    return _run_generators(resolve_recipe(recipe), "self_instruct")


@flow(name="build-preferences", log_prints=True)
def build_preferences_flow(recipe: str, part_dirs: dict[str, str] | None = None) -> str | None:
    """Answer the recipe's prompts with several responses, judge them, binarize into preference pairs."""
    r = resolve_recipe(recipe)
    if not r.preferences:
        print("the recipe has no `preferences:` section; nothing to do")
        return None
    part_dirs = part_dirs or curation.finished_parts(r)
    wanted = curation.prompt_parts(r, part_dirs)
    missing = [w for w in wanted if w not in part_dirs]
    if missing:
        raise RuntimeError(f"stage build-preferences: prompts come from {missing}, which have not been built yet")
    return preferences_task(r, [part_dirs[w] for w in wanted])


@flow(name="curate", log_prints=True)
def curate_flow(recipe: str, part_dirs: dict[str, str] | None = None, dask_address: str | None = None) -> str:
    """Read the recipe's sources, then run its curation stages over every row headed for the mix.

    Row-local stages score shards in parallel (one task per shard); near-duplicate detection signs shards in
    parallel and clusters once. Returns the path of the curated rows.
    """
    r = resolve_recipe(recipe)
    part_dirs = dict(part_dirs or {})
    futures = {s.name: read_source_task.submit(r, s.name) for s in r.sources if s.name not in part_dirs}
    part_dirs.update({n: f.result() for n, f in futures.items()})
    runner = task_runner_for(r.task_runner, dask_address)
    return _curate_stages.with_options(task_runner=runner)(r, part_dirs)


@flow(name="curate-stages", log_prints=True)
def _curate_stages(recipe: Recipe, part_dirs: dict[str, str]) -> str:
    with _progress_to_run_log():
        return curate_recipe(recipe, part_dirs, score=_score_on_tasks, sketch=_sketch_on_tasks, log=print)


# log_prints=False, even under a parent flow that logs prints: `datasets` hashes TRL's map functions with dill,
# whose `nestedglobals` reads `dis.dis` output from a captured stdout. Prefect's print patch sends that output
# to the run log instead (hundreds of LOAD_FAST lines per function) and dill then finds no globals at all.
@flow(name="train-sft", log_prints=False)
def train_sft_flow(recipe: str) -> dict[str, Any] | None:
    """SFT on the recipe's built mix, with the recipe's `training.sft` settings."""
    return _train(resolve_recipe(recipe), "sft")


@flow(name="train-dpo", log_prints=False)
def train_dpo_flow(recipe: str) -> dict[str, Any] | None:
    """DPO on the recipe's built mix, with the recipe's `training.dpo` settings."""
    return _train(resolve_recipe(recipe), "dpo")


def _train(recipe: Recipe, kind: str) -> dict[str, Any] | None:
    from alignmix.training import TrainingSection, train_dpo, train_sft

    section = TrainingSection.model_validate(recipe.training or {})
    config = getattr(section, kind)
    if config is None:
        get_run_logger().info("the recipe has no `training.%s` section; nothing to do", kind)
        return None
    out = recipe.out_dir() / "training" / kind
    model = config.model
    if kind == "dpo" and section.sft is not None and config.model in (None, "default", "sft"):
        sft_adapter = recipe.out_dir() / "training" / "sft" / "adapter"
        if sft_adapter.exists():
            model = str(sft_adapter)
    if model != config.model:
        config = config.model_copy(update={"model": model})
    run = train_sft if kind == "sft" else train_dpo
    try:
        with _progress_to_run_log():
            result = run(recipe.out_dir(), out, config)
    except Exception as err:
        raise RuntimeError(f"stage train-{kind} failed on mix {recipe.out_dir()}: {err}") from err
    get_run_logger().info("train-%s: adapter at %s", kind, result.get("adapter"))
    return result


PART_FLOWS = [generate_magpie, generate_self_instruct, build_preferences_flow, curate_flow, train_sft_flow, train_dpo_flow]


# --- the main flow ------------------------------------------------------------------------------------------


@flow(name="build-ultrafeedback-mix", log_prints=True)
def build_ultrafeedback_mix(recipe: str, dask_address: str | None = None) -> dict[str, Any]:
    """Generate, read, curate and mix the recipe's sources into a mix with its data card; then train if asked.

    `recipe`: a path to a YAML recipe, the name of a bundled one (demo, ultrafeedback-mix) or inline YAML.
    """
    r = resolve_recipe(recipe)
    mix_dir = r.out_dir()
    mix_dir.mkdir(parents=True, exist_ok=True)
    print(f"building {r.name!r} into {mix_dir}")

    sources = {s.name: read_source_task.submit(r, s.name) for s in r.sources}  # read while generating
    part_dirs = _run_generators(r, None)
    part_dirs.update({n: f.result() for n, f in sources.items()})
    if r.preferences:
        pref_dir = build_preferences_flow(recipe, part_dirs)
        if pref_dir:
            part_dirs[Path(pref_dir).name] = pref_dir
    if r.iterative:  # on-policy rounds; each round's curated pairs are a part of the mix
        from alignmix.flows.iterative import iterative_dpo

        part_dirs.update(iterative_dpo(recipe, part_dirs))
    for spec in r.rejection_sampling:  # one after another: each samples with the whole machine
        prompts = [part_dirs[p] for p in spec["prompts"]] if isinstance(spec["prompts"], list) else [part_dirs[spec["prompts"]]]
        part_dirs[spec["name"]] = rejection_sampling_task(r, spec["name"], prompts)

    curated_path = curate_flow(recipe, part_dirs, dask_address)
    curation.prune_stale(r, part_dirs)
    manifest = mix_task(r, curated_path)
    card = card_task(r)
    _publish_artifacts(r, manifest, card)

    result: dict[str, Any] = {"mix_dir": str(mix_dir), "card": card, "splits": manifest.get("splits")}
    if r.training:
        if r.training.get("sft"):
            result["sft"] = train_sft_flow(recipe)
        if r.training.get("dpo"):
            result["dpo"] = train_dpo_flow(recipe)
    print(f"data card: {mix_dir / 'README.md'} (HTML: {card.get('html')})")
    for kind in ("sft", "dpo"):
        if result.get(kind):
            print(f"{kind} adapter: {result[kind].get('adapter')}")
    return result


def _publish_artifacts(recipe: Recipe, manifest: dict[str, Any], card: dict[str, Any]) -> None:
    """The card as a Prefect markdown artifact and the shards and funnel as table artifacts."""
    key = "".join(c if c.isalnum() else "-" for c in recipe.name.lower())
    readme = Path(card["readme"]).read_text(encoding="utf-8")
    body = readme.split("---", 2)[2] if readme.startswith("---") else readme
    create_markdown_artifact(key=f"{key}-data-card", markdown=body, description=f"Data card of {recipe.name}")
    create_table_artifact(
        key=f"{key}-shards",
        table=[{"file": s["file"], "split": s["split"], "rows": s["rows"], "sha256": s["sha256"]} for s in manifest["shards"]],
        description=f"Shards of {recipe.name}",
    )
    funnel = MixStore(recipe.out_dir()).read_stats("mix") or {}
    if funnel.get("funnel"):
        create_table_artifact(key=f"{key}-funnel", table=funnel["funnel"], description="Rows through every stage")
