"""build_stage for recipes, and the dedup / filter / review commands."""

import polars as pl
import pytest
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.filters.registry import STAGES, build_stage
from alignmix.pipeline.store import MixStore, write_shards
from tests.filters.rows import pref, prefs

PROMPT = "Explain how a refrigerator keeps food cold, using the ideas of pressure, evaporation and heat transfer in simple words"


def test_every_stage_builds_from_a_recipe_entry(tmp_path):
    evals = tmp_path / "e.jsonl"
    evals.write_text('{"prompt": "x"}\n')
    names = {
        "exact_dedup": {},
        "near_dedup": {"threshold": 0.7},
        "length": {"max_length_ratio": 3.0},
        "consistency": {"min_margin": 1.0},
        "language": {"keep": ["en"]},
        "decontam": {"evals": [{"path": str(evals), "field": "prompt"}]},
        "quality": {"responses": "both"},
        "reasoning": {"max_sentence_repeats": 20},
        "verify": {"pairs": "chosen"},
    }
    assert set(STAGES) == set(names)
    for name, config in names.items():
        stage = build_stage({"stage": name, **config})
        assert stage.name == name
        dumped = stage.config.model_dump(mode="json", exclude_none=True)
        assert {k: dumped[k] for k in config} == config
        # What a parallel shard task scores with: same config, its own (unloaded) resources.
        fresh = stage.fresh()
        assert type(fresh) is type(stage) and fresh is not stage and fresh.config == stage.config


def test_bad_entries_name_the_problem():
    with pytest.raises(ValueError, match="unknown curation stage 'dedupe'"):
        build_stage({"stage": "dedupe"})
    with pytest.raises(ValueError, match="needs `stage: <name>`"):
        build_stage({"threshold": 0.8})
    with pytest.raises(ValueError, match="treshold"):
        build_stage({"stage": "near_dedup", "treshold": 0.8})


@pytest.fixture()
def ingested(tmp_path):
    frame = prefs(
        pref(0, "Good.", "Bad.", prompt=PROMPT, sc=8.0, sr=2.0),
        pref(1, "Good!", "Bad!", prompt=PROMPT.upper(), sc=8.0, sr=2.0),
        pref(2, "Good?", "Bad?", prompt=PROMPT + " please", sc=8.0, sr=2.0),
        pref(3, "Same.", "Same.", prompt="What is the tallest mountain on Earth and how tall is it?", sc=5.0, sr=5.0),
    )
    write_shards(frame, tmp_path / "in" / "data")
    return tmp_path


def test_dedup_command(ingested):
    out = ingested / "out"
    result = CliRunner().invoke(app, ["dedup", str(ingested / "in"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exact_dedup: 4 in, 3 kept, dropped: exact_duplicate 1" in result.output
    assert "near_dedup: 3 in, 2 kept, dropped: near_duplicate 1" in result.output
    store = MixStore(out)
    assert store.read()["source_id"].to_list() == ["0", "3"]
    assert pl.read_parquet(store.rejected_path("near_dedup"))["source_id"].to_list() == ["2"]
    assert store.read_stats("near_dedup")["config"]["bands"] == 17

    result = CliRunner().invoke(app, ["dedup", str(ingested / "in"), "--out", str(ingested / "out2"), "--exact-only"])
    assert result.exit_code == 0 and "near_dedup" not in result.output


def test_filter_command_and_its_errors(ingested):
    out = ingested / "f"
    result = CliRunner().invoke(
        app, ["filter", str(ingested / "in"), "--out", str(out), "--stage", "consistency", "--stage", '{"stage": "length", "max_length_ratio": 1.5}']
    )
    assert result.exit_code == 0, result.output
    assert "consistency: 4 in, 3 kept, dropped: score_tie 1" in result.output
    result = CliRunner().invoke(app, ["filter", str(ingested / "in"), "--out", str(out), "--stage", "nope"])
    assert result.exit_code == 2 and "unknown curation stage 'nope'" in result.output
    result = CliRunner().invoke(app, ["dedup", str(ingested / "missing"), "--out", str(out)])
    assert result.exit_code == 2 and "missing: does not exist" in result.output
    # A stage that fails while running names itself, its place and its input, then what went wrong.
    gone = ingested / "gone.jsonl"
    result = CliRunner().invoke(app, [
        "filter", str(ingested / "in"), "--out", str(out), "--stage", "consistency",
        "--stage", f'{{"stage": "decontam", "evals": [{{"path": "{gone}", "field": "q"}}]}}',
    ])
    message = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert (f"stage decontam (2 of 2 in curation) failed on 3 rows from t: FileNotFoundError: evaluation set {gone} "
            "does not exist") in message


def test_review_command(ingested):
    result = CliRunner().invoke(app, ["review", str(ingested / "in"), "--sample", "2"], input="a\nb\n")
    assert result.exit_code == 0, result.output
    assert "reviewed 2 pairs" in result.output
    assert (ingested / "in" / "review" / "verdicts.jsonl").exists()


def test_every_stage_handles_an_empty_frame_and_a_single_row(tmp_path):
    from alignmix.pipeline.schema import empty_frame
    from tests.stage_contract import assert_stage_contract

    evals = tmp_path / "e.jsonl"
    evals.write_text('{"prompt": "x y z"}\n')
    for name in STAGES:
        stage = build_stage({"stage": name, **({"evals": [{"path": str(evals)}]} if name == "decontam" else {})})
        for frame in (empty_frame("preference"), prefs(pref(0, "A fine answer.", "A worse answer."))):
            kept, rejected, _ = assert_stage_contract(stage, frame)
            assert kept.height == frame.height and rejected.height == 0, name
