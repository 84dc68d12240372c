"""Mixing by recipe: fraction / count / share, upsampling, errors, splits, determinism, recorded draws."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from alignmix.pipeline.mixing import MixError, draw_times, mix_sources, plan_counts
from alignmix.pipeline.recipe import MixSpec
from alignmix.pipeline.schema import preference_row, sft_row, to_frame


def pref_frame(source: str, n: int, prompt: str = "What is {i}?") -> pl.DataFrame:
    rows = [
        preference_row(
            prompt.format(i=i),
            [{"role": "user", "content": prompt.format(i=i)}, {"role": "assistant", "content": f"good {i}"}],
            [{"role": "user", "content": prompt.format(i=i)}, {"role": "assistant", "content": f"bad {i}"}],
            score_chosen=8.0, score_rejected=3.0, source=source, source_id=str(i),
        )
        for i in range(n)
    ]
    return to_frame(rows, "preference")


def spec(**kw) -> MixSpec:
    return MixSpec.model_validate(kw)


@pytest.fixture()
def curated() -> dict[str, pl.DataFrame]:
    return {"a": pref_frame("a", 20), "b": pref_frame("b", 8, "Write a poem about {i}"), "c": pref_frame("c", 5, "Define the word {i}")}


def test_fraction_count_and_share_give_the_rows_asked(curated) -> None:
    result = mix_sources(curated, spec(sources={"a": {"fraction": 0.5}, "b": {"count": 3}, "c": {"fraction": 1.0}}),
                         seed=1)
    s = result.stats["sources"]
    assert (s["a"]["rows"], s["b"]["rows"], s["c"]["rows"]) == (10, 3, 5)
    assert result.train.height == 18 and result.test.height == 0
    assert result.train.group_by("source").len().sort("source").rows() == [("a", 10), ("b", 3), ("c", 5)]
    assert result.train["id"].n_unique() == 18  # no repeats without upsampling
    assert s["a"]["share_of_mix"] == round(10 / 18, 6)


def test_shares_of_the_total_round_by_largest_remainder() -> None:
    assert plan_counts({"a": 100, "b": 100, "c": 100},
                       spec(sources={"a": {"share": 1 / 3}, "b": {"share": 1 / 3}, "c": {"share": 1 / 3}}, total=10)) \
        == {"a": 4, "b": 3, "c": 3}


def test_asking_more_than_a_source_has_names_source_rows_and_ask(curated) -> None:
    with pytest.raises(MixError) as err:
        mix_sources(curated, spec(sources={"c": {"count": 8}}), seed=1)
    msg = str(err.value)
    assert "mix.sources.c" in msg and "asks for 8 rows" in msg and "has 5 rows" in msg and "upsample: true" in msg
    with pytest.raises(MixError, match=r"asks for 12 rows \(share: 0.6\) but source 'c' has 5 rows"):
        mix_sources(curated, spec(sources={"c": {"share": 0.6}}, total=20), seed=1)


def test_other_errors_name_the_problem(curated) -> None:
    with pytest.raises(MixError, match=r"names \['zz'\], which are not among the sources \['a', 'b', 'c'\]"):
        mix_sources(curated, spec(sources={"zz": {"count": 1}}), seed=1)
    with pytest.raises(MixError, match="the shares add up to 1.2"):
        mix_sources(curated, spec(sources={"a": {"share": 0.6}, "b": {"share": 0.6, "upsample": True}}, total=10), 1)
    sft = to_frame([sft_row([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                            source="s", source_id="0")], "sft")
    with pytest.raises(MixError, match="one row kind"):
        mix_sources({"a": curated["a"], "s": sft}, spec(), seed=1)


def test_upsampling_repeats_rows_evenly_and_records_the_draws(curated) -> None:
    result = mix_sources(curated, spec(sources={"c": {"count": 12, "upsample": True}}), seed=3)
    times = result.draws.sort("source_id")["times"].to_list()
    assert sum(times) == 12 and sorted(times) == [2, 2, 2, 3, 3]  # 12 = 2 x 5 + 2 drawn once more
    counts = result.train.group_by("source_id").len()
    assert dict(counts.iter_rows()) == dict(zip(result.draws["source_id"], result.draws["times"]))
    assert (result.stats["sources"]["c"]["rows"], result.stats["sources"]["c"]["distinct_rows"],
            result.stats["sources"]["c"]["max_times"]) == (12, 5, 3)
    assert draw_times(3, 7, np.random.default_rng(0)).tolist() in ([3, 2, 2], [2, 3, 2], [2, 2, 3])


def test_same_seed_same_mix_whatever_the_input_order(curated) -> None:
    s = spec(sources={"a": {"count": 7}, "b": {"fraction": 0.5}}, test_fraction=0.25)
    one = mix_sources(curated, s, seed=5)
    shuffled = {k: v.sample(fraction=1.0, shuffle=True, seed=9) for k, v in curated.items()}
    two = mix_sources(shuffled, s, seed=5)
    assert_frame_equal(one.train, two.train)
    assert_frame_equal(one.test, two.test)
    assert_frame_equal(one.draws, two.draws)
    other = mix_sources(curated, s, seed=6)
    assert set(other.draws["id"]) != set(one.draws["id"])


def test_adding_a_source_leaves_the_draws_of_the_others_alone(curated) -> None:
    alone = mix_sources(curated, spec(sources={"a": {"count": 6}}), seed=2)
    together = mix_sources(curated, spec(sources={"a": {"count": 6}, "c": {"count": 2}}), seed=2)
    assert alone.draws["id"].to_list() == together.draws.filter(pl.col("source") == "a")["id"].to_list()


def test_split_is_stratified_by_source_and_never_splits_a_repeated_row(curated) -> None:
    result = mix_sources(
        curated, spec(sources={"a": {"fraction": 1.0}, "c": {"count": 10, "upsample": True}}, test_fraction=0.2), seed=4
    )
    test_by_source = result.draws.filter(pl.col("split") == "test").group_by("source").len().sort("source").rows()
    assert test_by_source == [("a", 4), ("c", 1)]  # round(0.2 * 20), round(0.2 * 5) distinct rows
    assert result.test.height == 4 + 2  # the held-out c row was drawn twice, both copies held out
    assert not set(result.train["id"]) & set(result.test["id"])
    assert result.stats["rows"] == {"train": 24, "test": 6, "total": 30}


def test_split_can_be_stratified_by_category() -> None:
    # 10 coding and 10 writing prompts from one source: each category gets its own 20% held out.
    frame = pl.concat([pref_frame("m", 10, "Write Python code for task {i}"),
                       pref_frame("m", 10, "Compose a sonnet about {i}").with_columns(
                           pl.col("source_id").map_elements(lambda s: f"w{s}", return_dtype=pl.String))])
    result = mix_sources({"m": frame}, spec(test_fraction=0.2, stratify_by=["source", "category"]), seed=0)
    held = result.test.group_by("category").len().sort("category").rows()
    assert held == [("coding", 2), ("writing", 2)]
    assert result.stats["categories"]["mix"]["coding"] == 10 and result.stats["categories"]["mix"]["writing"] == 10


def test_an_empty_spec_takes_every_source_whole(curated) -> None:
    result = mix_sources(curated, MixSpec(), seed=0)
    assert result.train.height == 33
    assert "category" in result.train.columns
