"""Mixing curated sources by recipe into train and test frames, deterministically, recording every draw.

Per source, a recipe asks for one of:

    fraction: 0.5        half of the source's rows after curation, without repetition
    count: 300           300 rows; more than the source has only with `upsample: true`
    share: 0.25          a quarter of the final mix, whose size is `mix.total`

    >>> result = mix_sources({"uf": uf, "hh": hh}, MixSpec(sources={"uf": {"count": 10}, "hh": {"fraction": 0.5}},
    ...                      test_fraction=0.1), seed=13)                                   # doctest: +SKIP
    >>> result.stats["sources"]["uf"]["rows"], result.draws.columns                    # doctest: +SKIP
    (10, ['source', 'id', 'source_id', 'times', 'split'])

With `fusion:` (alignmix.pipeline.fusion), rows are rewritten for their thinking mode before they are drawn and
the draws are thinned to the asked share of thinking rows; `stats["fusion"]` records both sides.

Upsampling repeats every row `n // N` times and then draws `n % N` distinct rows once more, so no row is
repeated twice as often as another. The test split is drawn from distinct rows, so a repeated row is never in
both splits; it is stratified by source (and by `category` when `stratify_by` names it).
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from alignmix.pipeline.fusion import FusionError, fuse_draws, set_modes
from alignmix.pipeline.recipe import MixSourceSpec, MixSpec
from alignmix.pipeline.schema import prompt_rows_in, row_kind
from alignmix.pipeline.topics import CATEGORIES, add_categories


class MixError(ValueError):
    """A mix the recipe asks for but the curated sources cannot give; the message says which source and why."""


class MixResult(NamedTuple):
    train: pl.DataFrame
    test: pl.DataFrame
    draws: pl.DataFrame  # one row per distinct drawn row: source, id, source_id, times, split
    stats: dict[str, Any]


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator per (seed, purpose, source, ...): adding a source never changes the draws of another."""
    digest = hashlib.sha256("\x1f".join(keys).encode()).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, int.from_bytes(digest[:8], "little")])


def _largest_remainder(exact: dict[str, float]) -> dict[str, int]:
    """Round values so that they sum to the rounded total: 3 x 1/3 of 10 gives 4, 3, 3 (not 3, 3, 3)."""
    floors = {k: int(np.floor(v)) for k, v in exact.items()}
    missing = int(round(sum(exact.values()))) - sum(floors.values())
    by_remainder = sorted(exact, key=lambda k: (-(exact[k] - floors[k]), k))
    for k in by_remainder[:missing]:
        floors[k] += 1
    return floors


def plan_counts(available: dict[str, int], spec: MixSpec) -> dict[str, int]:
    """How many rows each source gives, checked against what it has.

    >>> plan_counts({"a": 200, "b": 50}, MixSpec(sources={"a": {"fraction": 0.5}, "b": {"count": 20}}))
    {'a': 100, 'b': 20}
    """
    wanted: dict[str, int] = {}
    shares = {name: s.share for name, s in spec.sources.items() if s.share is not None}
    if shares:
        if sum(shares.values()) > 1 + 1e-9:
            raise MixError(f"mix.sources: the shares add up to {sum(shares.values()):g}, more than the whole mix (1.0)")
        assert spec.total is not None  # MixSpec validates it
        wanted.update(_largest_remainder({n: s * spec.total for n, s in shares.items()}))
    for name, s in spec.sources.items():
        if s.fraction is not None:
            wanted[name] = int(round(s.fraction * available[name]))
        elif s.count is not None:
            wanted[name] = s.count
    for name, n in wanted.items():
        s = spec.sources[name]
        if n > available[name] and not s.upsample:
            raise MixError(
                f"mix.sources.{name}: the recipe asks for {n} rows ({_rule(s)}) but source {name!r} has "
                f"{available[name]} rows after curation; ask for at most {available[name]}, or set upsample: true"
            )
        if n > 0 and available[name] == 0:
            raise MixError(f"mix.sources.{name}: the recipe asks for {n} rows but source {name!r} has none left")
    return {name: wanted[name] for name in spec.sources}


def _rule(s: MixSourceSpec) -> str:
    for key in ("fraction", "count", "share"):
        if getattr(s, key) is not None:
            return f"{key}: {getattr(s, key)}"
    return "?"


def draw_times(n_available: int, n_wanted: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each of `n_available` rows is drawn, summing to `n_wanted`.

    >>> draw_times(4, 6, np.random.default_rng(0)).tolist()   # every row once, then 2 distinct rows again
    [1, 1, 2, 2]
    """
    times = np.full(n_available, n_wanted // n_available if n_available else 0, dtype=np.int64)
    extra = rng.choice(n_available, size=n_wanted % n_available, replace=False) if n_available else []
    times[extra] += 1
    return times


def _test_mask(strata: list[str], test_fraction: float, seed: int) -> np.ndarray:
    """For distinct rows with stratum labels: True for the rows held out, round(fraction * size) per stratum."""
    labels = np.asarray(strata, dtype=object)
    mask = np.zeros(len(labels), dtype=bool)
    if test_fraction <= 0:
        return mask
    for stratum in sorted(set(strata)):
        members = np.flatnonzero(labels == stratum)
        n_test = int(round(test_fraction * len(members)))
        chosen = _rng(seed, "split", stratum).choice(members, size=n_test, replace=False)
        mask[chosen] = True
    return mask


PROMPTS_NOT_MIXED = (
    "mix.sources names {names}, which hold prompt rows (conversations ending with the user turn, no response "
    "yet): a mix holds SFT or preference rows. Name them in `preferences.prompts` to make pairs from them, and "
    "take them out of mix.sources"
)


def mix_sources(curated: dict[str, pl.DataFrame], spec: MixSpec, seed: int) -> MixResult:
    """Draw each source's rows as `spec` asks, split train/test, and return the frames, the draws and stats.

    `curated` maps source names to frames of one row kind. A spec with no sources takes every source whole.
    Frames get a `category` column (alignmix.pipeline.topics) unless they already have one.
    """
    if not curated:
        raise MixError("there is nothing to mix: no curated sources were given")
    if not spec.sources:
        spec = spec.model_copy(update={"sources": {name: MixSourceSpec(fraction=1.0) for name in curated}})
    unknown = sorted(set(spec.sources) - set(curated))
    if unknown:
        raise MixError(f"mix.sources names {unknown}, which are not among the sources {sorted(curated)}")
    kinds = {name: row_kind(frame) for name, frame in curated.items() if name in spec.sources}
    prompts = sorted(n for n, k in kinds.items() if k != "preference" and prompt_rows_in(curated[n]))
    if prompts:
        raise MixError(PROMPTS_NOT_MIXED.format(names=prompts))
    if len(set(kinds.values())) > 1:
        raise MixError(f"a mix holds one row kind, but the sources are {kinds}; mix SFT and preference rows apart")

    # Sorting makes the draws independent of the order rows arrived in.
    frames = {
        name: _with_mode(add_categories(curated[name]), name, spec).with_columns(pl.lit(name).alias("source")).sort("id", "source_id")
        for name in sorted(spec.sources)
    }
    wanted = plan_counts({n: f.height for n, f in frames.items()}, spec)

    drawn_parts, draws_parts = [], []
    for name, frame in frames.items():
        times = draw_times(frame.height, wanted[name], _rng(seed, "draw", name))
        picked = np.flatnonzero(times)
        rows = frame[picked.tolist()] if picked.size else frame.clear()
        drawn_parts.append(rows.with_columns(pl.Series("__times", times[picked], dtype=pl.Int64)))

    distinct = pl.concat(drawn_parts, how="diagonal_relaxed")
    fused = None
    if spec.fusion is not None:
        _check_sides(distinct, spec.fusion.thinking)
        distinct, fused = fuse_draws(distinct, spec.fusion.thinking, _rng(seed, "fusion"))
    strata_cols = [c for c in spec.stratify_by if c in distinct.columns] or ["source"]
    strata = distinct.select(pl.concat_str([pl.col(c).fill_null("") for c in strata_cols], separator="/"))
    is_test = _test_mask(strata.to_series().to_list(), spec.test_fraction, seed)
    distinct = distinct.with_columns(pl.Series("__split", np.where(is_test, "test", "train")))
    draws_parts.append(
        distinct.select("source", "id", "source_id", pl.col("__times").alias("times"), pl.col("__split").alias("split"))
    )

    def expand(split: str) -> pl.DataFrame:
        part = distinct.filter(pl.col("__split") == split)
        repeated = np.repeat(np.arange(part.height), part["__times"].to_numpy())
        # Shuffle the final order so that shards interleave sources; deterministic with the seed.
        order = repeated[_rng(seed, "order", split).permutation(repeated.size)]
        return part[order.tolist()].drop("__times", "__split") if order.size else part.clear().drop("__times", "__split")

    train, test = expand("train"), expand("test")
    draws = pl.concat(draws_parts).sort("source", "id", "source_id")
    stats = _mix_stats(spec, seed, frames, wanted, draws, train, test)
    if fused is not None:
        stats["fusion"] = {**spec.fusion.model_dump(mode="json"), **fused}
    return MixResult(train, test, draws, stats)


def _with_mode(frame: pl.DataFrame, name: str, spec: MixSpec) -> pl.DataFrame:
    if spec.fusion is None:
        return frame
    try:
        return set_modes(frame, name, spec.sources[name].mode, spec.fusion)
    except FusionError as err:
        raise MixError(str(err)) from None


def _check_sides(distinct: pl.DataFrame, share: float | None) -> None:
    """A share strictly between 0 and 1 needs rows of both modes among the draws."""
    if share is None or share in (0, 1) or distinct.is_empty():
        return
    have = set(distinct["mode"].to_list())
    for mode in ("thinking", "non_thinking"):
        if mode not in have:
            raise MixError(
                f"mix.fusion.thinking = {share:g} asks for both modes, but no {mode} row was drawn "
                f"(modes drawn: {sorted(have)}); add a source of {mode} rows (or set its `mode`), or drop the share"
            )


def _category_counts(frame: pl.DataFrame) -> dict[str, int]:
    counts = dict(frame.group_by("category").len().iter_rows()) if frame.height else {}
    return {c: int(counts.get(c, 0)) for c in CATEGORIES}


def _mix_stats(
    spec: MixSpec,
    seed: int,
    frames: dict[str, pl.DataFrame],
    wanted: dict[str, int],
    draws: pl.DataFrame,
    train: pl.DataFrame,
    test: pl.DataFrame,
) -> dict[str, Any]:
    total = train.height + test.height
    both = pl.concat([train, test], how="diagonal_relaxed")
    sources = {}
    for name, frame in frames.items():
        d = draws.filter(pl.col("source") == name)
        s = spec.sources[name]
        rule = next(k for k in ("fraction", "count", "share") if getattr(s, k) is not None)
        rows = int(d["times"].sum()) if d.height else 0
        sources[name] = {
            "available": frame.height,
            "rule": rule,
            "value": getattr(s, rule),
            "upsample": s.upsample,
            "asked": wanted[name],
            "rows": rows,
            "distinct_rows": d.height,
            "max_times": int(d["times"].max()) if d.height else 0,
            "train": int(d.filter(pl.col("split") == "train")["times"].sum()),
            "test": int(d.filter(pl.col("split") == "test")["times"].sum()),
            "share_of_mix": round(rows / total, 6) if total else 0.0,
        }
    by_source = {name: _category_counts(both.filter(pl.col("source") == name)) for name in frames}
    return {
        "seed": seed,
        "test_fraction": spec.test_fraction,
        "stratify_by": list(spec.stratify_by),
        "total": spec.total,
        "row_kind": row_kind(both),
        "rows": {"train": train.height, "test": test.height, "total": total},
        "sources": sources,
        "categories": {"mix": _category_counts(both), "by_source": by_source},
    }
