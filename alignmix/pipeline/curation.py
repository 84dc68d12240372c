"""A mix directory's parts and its curation records: what `alignmix mix` and the flow share.

Parts: each source is ingested into `work/sources/<name>/` (generators and preferences write their own
folders); `publish_part` copies a part's stats and rejected rows into the mix, where the card reads them;
`gather` concatenates the parts that feed the mix and fingerprints them.

Records: the engine that runs the stages is `alignmix.filters.apply.run_stages`; this module only knows the
stage contract. Each finished stage leaves `rejected/<stage>.parquet`, `stats/<stage>.json` (with its
fingerprint and per-source counts) and, when resumable, its kept rows in `work/curate/<stage>.parquet`; a rerun
whose inputs and config hash match reads those instead of running the stage again.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from alignmix.pipeline.recipe import Recipe
from alignmix.pipeline.mixing import PROMPTS_NOT_MIXED
from alignmix.pipeline.schema import prompt_rows_in, row_kind
from alignmix.pipeline.stage import Stage, StageResult, count_reasons
from alignmix.pipeline.store import MixStore, fingerprint, read_json, sha256_file, write_frame, write_json

import alignmix

# Rows per curation shard: the unit one task scores. Small enough to spread over a few workers, large enough
# that per-task overhead stays below the work.
DEFAULT_SHARD_ROWS = 5_000


def mix_source_names(recipe: Recipe, available: list[str] | pl.DataFrame) -> list[str]:
    """The parts that feed the mix: the `mix.sources` names, in their order; without them, every source present."""
    if recipe.mix.sources:
        return list(recipe.mix.sources)  # a source curation emptied still counts: the mix says it has 0 rows
    if isinstance(available, pl.DataFrame):
        available = available["source"].unique(maintain_order=True).to_list() if available.height else []
    return list(available)


def gather(recipe: Recipe, part_dirs: dict[str, str]) -> tuple[pl.DataFrame, str]:
    """Concatenate the shards of every part that feeds the mix; return the rows and a fingerprint of them.

    Prompt rows never enter a mix (they have no response; they feed `preferences.prompts`): without
    `mix.sources`, parts of prompt rows are left out; a `mix.sources` that names one is an error.
    """
    named = bool(recipe.mix.sources)
    wanted = list(recipe.mix.sources) if named else sorted(part_dirs)
    missing = [n for n in wanted if n not in part_dirs]
    if missing:
        raise ValueError(
            f"mix.sources names {missing}, but the recipe has no source or generator by that name "
            f"(it has {sorted(part_dirs)})"
        )
    frames, digests, kinds, prompts = [], [], {}, []
    for name in wanted:
        store = MixStore(part_dirs[name])
        files = store.shard_files()
        if not files:
            raise ValueError(f"part {name!r} ({part_dirs[name]}) holds no shards")
        frame = pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
        kind = row_kind(frame)
        if kind != "preference" and prompt_rows_in(frame):
            prompts.append(name)
            continue
        kinds[name] = kind
        frames.append(frame)
        digests.append([name, [sha256_file(f) for f in files]])
    if prompts and named:
        raise ValueError(PROMPTS_NOT_MIXED.format(names=prompts))
    if len(set(kinds.values())) > 1:
        raise ValueError(
            f"a mix holds one row kind, but its sources differ: {kinds}; turn SFT prompts into pairs with "
            "`preferences:` (and mix the pairs), or build two mixes"
        )
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    return frame, fingerprint("gather", alignmix.__version__, digests)


def prompt_parts(recipe: Recipe, part_dirs: dict[str, str]) -> list[str]:
    """The parts whose rows give the prompts of the recipe's `preferences`: the sources and generators that
    `preferences.prompts` names, or by default every generator and every source of prompt rows.

    A source of prompt rows (ShareGPT first turns, an eval-style prompt list) is how a recipe builds an
    UltraFeedback-style mix from prompts it already has; it is never mixed itself (see `gather`).
    """
    named = recipe.prompt_names()
    if named:
        return named
    sources = [s.name for s in recipe.sources if s.name in part_dirs and part_kind(part_dirs[s.name]) == "prompt"]
    return [str(g.get("name")) for g in recipe.generators] + sources


def part_kind(part_dir: str | Path) -> str | None:
    """The row kind an ingested part recorded in its stats (None for parts without ingest stats)."""
    for stats in MixStore(part_dir).all_stats().values():
        if str(stats.get("stage", "")).startswith("ingest-") and stats.get("kind"):
            return str(stats["kind"])
    return None


def shard_rows(recipe: Recipe) -> int:
    """Rows per curation shard: the recipe's `task_runner.shard_rows`, or DEFAULT_SHARD_ROWS."""
    return int((recipe.task_runner or {}).get("shard_rows", DEFAULT_SHARD_ROWS))


def stage_fingerprint(stage: Stage, previous: str) -> str:
    """A stage's name and full config (defaults included), chained to the fingerprint of its input."""
    return fingerprint("stage", alignmix.__version__, stage.name, stage.config.model_dump(mode="json"), previous)


def kept_path(store: MixStore, stage: str) -> Path:
    return store.root / "work" / "curate" / f"{stage}.parquet"


def load_done(store: MixStore, stage: str, stage_fp: str) -> pl.DataFrame | None:
    """The kept rows of a stage finished earlier with the same fingerprint, or None."""
    if store.is_done(stage, stage_fp):
        return pl.read_parquet(kept_path(store, stage))
    return None


def split(frame: pl.DataFrame, rows: int) -> list[pl.DataFrame]:
    """Consecutive shards of `rows` rows (at least one shard, even when empty)."""
    if frame.height == 0:
        return [frame]
    return [frame.slice(i, rows) for i in range(0, frame.height, rows)]


def record_stage(
    store: MixStore, stage: Stage, frame_in: pl.DataFrame, result: StageResult, stage_fp: str | None, position: int
) -> pl.DataFrame:
    """Write a stage's rejected rows and stats (with per-source counts); with a fingerprint, also its kept rows,
    and mark it done so a rerun can skip it. Return the kept rows."""
    kept, rejected, stats = result
    store.write_rejected(stage.name, rejected)
    record = stats.model_dump(mode="json")
    record["by_source"] = by_source(frame_in, kept, rejected)
    record["position"] = position  # the stage's place in the recipe's curation list, for the card's funnel
    if stage_fp is None:
        store.write_stats(stage.name, record)
        return kept
    write_frame(kept, kept_path(store, stage.name))
    store.mark_done(stage.name, stage_fp, record, [store.rejected_path(stage.name), kept_path(store, stage.name)])
    return kept


def by_source(frame_in: pl.DataFrame, kept: pl.DataFrame, rejected: pl.DataFrame) -> dict[str, Any]:
    names = frame_in["source"].unique(maintain_order=True).to_list() if frame_in.height else []
    return {
        n: {
            "rows_in": frame_in.filter(pl.col("source") == n).height,
            "rows_kept": kept.filter(pl.col("source") == n).height,
            "dropped": count_reasons(rejected.filter(pl.col("source") == n)) if rejected.height else {},
        }
        for n in names
    }


def write_curated(store: MixStore, frame: pl.DataFrame) -> str:
    path = store.root / "work" / "curated.parquet"
    write_frame(frame, path)
    return str(path)


def mix_curated(recipe: Recipe, curated_path: str | Path) -> dict[str, Any]:
    """Mix the curated rows by the recipe into the mix directory (shards, stats/mix.json, manifest.json)."""
    from alignmix.pipeline.mix_build import build_mix

    curated = pl.read_parquet(curated_path)
    frames = {n: curated.filter(pl.col("source") == n) for n in mix_source_names(recipe, curated)}
    return build_mix(recipe, frames, recipe.output.dir)


# --- parts: each source (or generator) in its own folder, its stats and rejected rows published into the mix ---


def work_dir(recipe: Recipe) -> Path:
    """Where a mix's parts and intermediate files live: `<output.dir>/<name>/work/`."""
    return recipe.out_dir() / "work"


def finished_parts(recipe: Recipe) -> dict[str, str]:
    """Every finished part's folder by name: sources, generators, preferences (those with data/ shards)."""
    work = work_dir(recipe)
    dirs = {}
    for sub in ("sources", "generated", "preferences"):
        d = work / sub
        if d.exists():
            for p in sorted(d.iterdir()):
                if (p / "data").exists():
                    dirs[p.name] = str(p)
    return dirs


def ingest_part(recipe: Recipe, name: str) -> tuple[Path, dict[str, Any]]:
    """Ingest the recipe's source `name` into work/sources/<name>/ (resumable) and publish its stats."""
    from alignmix.pipeline.ingest import ingest_source

    spec = next(s for s in recipe.sources if s.name == name)
    out = work_dir(recipe) / "sources" / name
    try:
        stats = ingest_source(spec, out, rows_per_shard=recipe.output.rows_per_shard)
    except Exception as err:
        raise RuntimeError(f"stage read-source failed on source {name!r} ({spec.path or spec.hf}): {err}") from err
    publish_part(out, recipe.out_dir())
    return out, stats


def publish_part(part_dir: Path, mix_dir: Path) -> None:
    """Copy a part's rejected rows and stats into the mix directory, where the card reads them.

    A part's files are named by stage (`magpie.json`); in the mix they also carry the part's name
    (`magpie-<generator>.json`), so two generators of one kind never overwrite each other.
    """
    for f, dest in part_outputs(part_dir, mix_dir):
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.suffix == ".json":
            stats = read_json(f)
            # Parts come before curation in the card's funnel: reading and generating, then the preference steps.
            stats.setdefault("position", PART_POSITIONS.get(str(stats.get("stage", "")).split("-")[0], -4))
            write_json(dest, stats)
        elif not dest.exists() or dest.read_bytes() != f.read_bytes():
            shutil.copyfile(f, dest)


PART_POSITIONS = {"ingest": -4, "magpie": -4, "self_instruct": -4, "arithmetic_problems": -4, "responses": -3,
                  "judge": -2, "binarize": -1, "rejection_sampling": -2}


def part_outputs(part_dir: Path, mix_dir: Path) -> list[tuple[Path, Path]]:
    part = part_dir.name
    out = []
    for sub in ("rejected", "stats"):
        src = part_dir / sub
        if src.exists():
            for f in sorted(src.iterdir()):
                if f.is_file() and not f.name.startswith("."):
                    stem, _, ext = f.name.partition(".")
                    out.append((f, mix_dir / sub / (f.name if part in stem else f"{stem}-{part}.{ext}")))
    return out


def prune_stale(recipe: Recipe, part_dirs: dict[str, str]) -> None:
    """Remove rejected rows and stats that this recipe no longer produces (a stage or source taken out since an
    earlier build), so the card never counts them."""
    mix_dir = recipe.out_dir()
    keep = {dest for d in part_dirs.values() for _, dest in part_outputs(Path(d), mix_dir)}
    stages = {str(spec.get("stage")) for spec in recipe.curation}
    keep |= {mix_dir / sub / f"{name}.{ext}" for name in stages for sub, ext in (("rejected", "parquet"), ("stats", "json"))}
    for sub in ("rejected", "stats"):
        for f in sorted((mix_dir / sub).glob("*")):
            if f.is_file() and f not in keep and not f.name.startswith("mix"):
                f.unlink()
