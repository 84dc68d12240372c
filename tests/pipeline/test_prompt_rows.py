"""Prompt rows (a conversation ending with the user turn to answer) from real prompt-only files: ingest with exact
counts, curation stages on them, `load_prompts` on them, recipes that name a prompt source in
`preferences.prompts`, and the mix refusing them. The end-to-end build of recipes/prompts-demo.yaml is `slow`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import orjson
import polars as pl
import pytest
import yaml
from rich.console import Console

from alignmix.filters.registry import build_stage
from alignmix.pipeline import curation
from alignmix.pipeline.ingest import ingest_source, read_rejected, read_rows
from alignmix.pipeline.inspect import render_inspect
from alignmix.pipeline.mixing import MixError, mix_sources
from alignmix.pipeline.recipe import MixSpec, RecipeError, SourceSpec, load_recipe
from alignmix.pipeline.schema import (
    SFT_SCHEMA,
    RowError,
    content_id,
    prompt_row,
    prompt_rows_in,
    row_kind,
    sft_row,
    to_frame,
)
from alignmix.pipeline.store import MixStore
from alignmix.synth.responses import load_prompts
from tests.stage_contract import assert_stage_contract

ROOT = Path(__file__).resolve().parents[2]
SHAREGPT = "prompts/sharegpt_first_turns_2978.json"


@pytest.fixture(scope="module")
def sharegpt(shared_data: Path, tmp_path_factory) -> tuple[dict, Path]:
    """The 2,978 ShareGPT first turns, ingested once: (stats, store folder)."""
    out = tmp_path_factory.mktemp("sharegpt")
    stats = ingest_source(SourceSpec(name="sharegpt", path=str(shared_data / SHAREGPT)), out)
    return stats, out


@pytest.fixture(scope="module")
def prompts(sharegpt) -> pl.DataFrame:
    return MixStore(sharegpt[1]).read()


# --- the row kind ----------------------------------------------------------------------------------------------


def test_prompt_row_validation_and_its_reasons():
    row = prompt_row([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}],
                     source="s", source_id="0")
    assert row["messages"][-1] == {"role": "user", "content": "Name a river."}
    for turns, reason, field in [
        ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "not_ending_with_user",
         "messages"),
        ([{"role": "system", "content": "Be brief."}], "not_ending_with_user", "messages"),
        ([{"role": "user", "content": "  "}], "empty_turn", "messages[0].content"),
        ([], "empty_turn", "messages"),
        ([{"role": "tool", "content": "x"}], "bad_role", "messages[0].role"),
        (None, "missing_field", "messages"),
    ]:
        with pytest.raises(RowError) as err:
            prompt_row(turns, source="s", source_id="0")
        assert (err.value.reason, err.value.field) == (reason, field)


def test_prompt_ids_hash_their_kind_and_sft_ids_do_not():
    turns = [{"role": "user", "content": "Name a river. "}]
    row = prompt_row(turns, source="s", source_id="0")
    key = {"kind": "prompt", "messages": [["user", "Name a river."]]}
    assert row["id"] == hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    # The same turns hashed without the kind (a response's prompt_id) keep the id they always had.
    plain = {"messages": [["user", "Name a river."]]}
    assert content_id({"messages": turns}) == hashlib.blake2b(
        orjson.dumps(plain, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest() != row["id"]
    answered = sft_row(turns + [{"role": "assistant", "content": "The Nile."}], source="s", source_id="0")
    assert answered["id"] == content_id(answered) != row["id"]


def test_row_kind_reads_the_final_roles():
    p = prompt_row([{"role": "user", "content": "Hi"}], source="s", source_id="0")
    s = sft_row([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], source="s", source_id="1")
    assert row_kind(to_frame([p], "prompt")) == "prompt"
    assert row_kind(to_frame([s], "sft")) == "sft"
    mixed = to_frame([p, s], "sft")
    assert row_kind(mixed) == "sft" and prompt_rows_in(mixed) == 1  # mixed frames are SFT, and fail where checked
    assert row_kind(to_frame([], "prompt")) == "sft"  # nothing to read the roles from
    assert row_kind(["messages", "id"]) == "sft"


# --- ingest of real prompt-only files -------------------------------------------------------------------------


def test_sharegpt_first_turns_ingest_as_prompt_rows(shared_data, sharegpt, prompts):
    stats, out = sharegpt
    assert (stats["format"], stats["kind"]) == ("sharegpt", "prompt")
    # 2,978 records: 16 hold only a system turn and 4 only a gpt turn, 1 an empty human turn; 58 human prompts
    # repeat, 96 times in all (the repeats of the 21 invalid records are rejected for what they are).
    assert stats["rows_in"] == 2978
    assert stats["rows_kept"] == 2861
    assert stats["dropped"] == {"duplicate_content": 96, "not_ending_with_user": 20, "empty_turn": 1}
    assert stats["distributions"]["prompt_chars"]["n"] == 2861

    rejected = pl.read_parquet(MixStore(out).rejected_path("ingest-sharegpt"))
    raw = json.loads((shared_data / SHAREGPT).read_text("utf-8"))
    speakers = {r["record"] - 1: raw[r["record"] - 1]["conversations"][0]["from"]
                for r in rejected.filter(pl.col("drop_reason") == "not_ending_with_user").to_dicts()}
    assert sorted(speakers.values()).count("system") == 16 and sorted(speakers.values()).count("gpt") == 4
    # A duplicate names the first row's source_id, whose prompt is the very same text.
    dups = rejected.filter(pl.col("drop_reason") == "duplicate_content")
    assert dups.height == 96 and dups["id"].is_in(prompts["id"].implode()).all()
    first = dups.row(0, named=True)
    kept = prompts.filter(pl.col("source_id") == first["drop_detail"]).row(0, named=True)
    assert kept["id"] == first["id"]
    assert raw[int(first["source_id"])]["conversations"][0]["value"] == kept["messages"][0]["content"]

    assert row_kind(prompts) == "prompt" and prompts["id"].n_unique() == 2861
    assert orjson.loads(prompts["meta"][0]) == {"id": "pX51ZUz"}  # ShareGPT's own id, kept in meta
    loaded = datasets.load_dataset("parquet", data_dir=str(out / "data"), split="train")
    assert loaded.num_rows == 2861 and loaded.features == datasets.Features.from_arrow_schema(SFT_SCHEMA)
    assert loaded[5]["messages"] == prompts["messages"][5].to_list()


@pytest.mark.parametrize(
    ("file", "rows", "meta_keys", "first_prompt"),
    [
        ("evals/alpaca_eval_text_davinci_003_outputs.json", 805, {"dataset", "generator", "output"},
         "What are the names of some famous actors that started their careers on Broadway?"),
        ("evals/arena_hard_v0.1_question.jsonl", 500, {"uid", "category", "cluster"},
         "Use ABC notation to write a melody in the style of a folk tune."),
        ("evals/arena_hard_v2.0_question.jsonl", 750, {"uid", "category", "subcategory"},
         "Write me a zig program that solves the following problem from advent of code"),
        ("evals/ifeval_input_data.jsonl", 541, {"key", "instruction_id_list", "kwargs"},
         "Write a 300+ word summary of the wikipedia page"),
        ("evals/mt_bench_question.jsonl", 80, {"question_id", "category", "follow_up_turns"},
         "Compose an engaging travel blog post about a recent trip to Hawaii"),
    ],
)
def test_eval_prompt_lists_ingest_as_prompt_rows(shared_data, tmp_path, file, rows, meta_keys, first_prompt):
    stats = ingest_source(SourceSpec(name="evals", path=str(shared_data / file)), tmp_path)
    assert (stats["format"], stats["kind"], stats["rows_in"], stats["rows_kept"], stats["dropped"]) == (
        "prompts", "prompt", rows, rows, {})
    frame = MixStore(tmp_path).read()
    assert row_kind(frame) == "prompt"
    assert frame["messages"].list.len().unique().to_list() == [1]
    assert frame["messages"][0][0]["content"].startswith(first_prompt)
    assert meta_keys <= set(orjson.loads(frame["meta"][0]))
    if "alpaca_eval" in file:  # the output belongs to text-davinci-003: kept in meta, never an answer
        assert orjson.loads(frame["meta"][0])["generator"] == "text_davinci_003"
    if "v2.0" in file:  # the U+2028 inside a prompt stays inside it
        assert frame["messages"].list.first().struct.field("content").str.contains("\u2028").sum() == 1
    if "mt_bench" in file:
        assert orjson.loads(frame["meta"][0])["follow_up_turns"] == [
            "Rewrite your previous response. Start every sentence with the letter A."]


def test_a_spec_kind_decides_and_must_fit_the_format(shared_data, tmp_path):
    path = shared_data / "llama_factory/alpaca_en_demo.json"
    # Forced to prompt rows, an Alpaca file with outputs keeps none of them: each record has an answer.
    frame = read_rows(SourceSpec(name="a", path=str(path), kind="prompt", limit=5))
    assert frame.height == 0
    rejected = read_rejected(SourceSpec(name="a", path=str(path), kind="prompt", limit=5))
    assert set(rejected["drop_reason"]) == {"not_ending_with_user"}
    # Its instructions as prompts, with the outputs kept in meta: the prompts format.
    frame = read_rows(SourceSpec(name="a", path=str(path), format="prompts", limit=5))
    assert frame.height == 5 and "output" in orjson.loads(frame["meta"][0])
    from alignmix.pipeline.ingest import IngestError

    with pytest.raises(IngestError, match="kind 'sft' does not apply to format 'prompts'"):
        read_rows(SourceSpec(name="a", path=str(path), format="prompts", kind="sft"))


# --- curation on prompt rows ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kept", "dropped"),
    [
        ({"stage": "exact_dedup", "field": "prompt"}, 2858, {"exact_duplicate": 3}),  # same text, other case/spacing
        ({"stage": "exact_dedup", "field": "response"}, 2861, {}),  # no response yet: empty text is never a duplicate
        ({"stage": "near_dedup", "field": "prompt", "threshold": 0.8}, 2845, {"near_duplicate": 16}),
        ({"stage": "length", "unit": "words", "min_response": 1}, 2861, {}),  # response rules leave prompts alone
        ({"stage": "length", "unit": "words", "min_prompt": 3}, 2801, {"prompt_too_short": 60}),
        ({"stage": "quality"}, 2861, {}),  # only empty turns are checked on prompts; ingest already refused them
        ({"stage": "language", "keep": ["en"]}, 2763, {"language_not_kept": 98}),
    ],
)
def test_stages_on_ingested_sharegpt_prompts(prompts, spec, kept, dropped):
    result = assert_stage_contract(build_stage(spec), prompts)
    assert (result.stats.rows_kept, result.stats.dropped) == (kept, dropped)
    assert row_kind(result.kept) == "prompt"


def test_exact_duplicates_are_the_same_prompt_in_other_case_or_spacing(prompts):
    result = build_stage({"stage": "exact_dedup", "field": "prompt"}).run(prompts)
    first = result.rejected.row(0, named=True)
    twin = prompts.filter(pl.col("id") == first["drop_detail"]).row(0, named=True)
    a, b = first["messages"][0]["content"], twin["messages"][0]["content"]
    assert a != b and " ".join(a.casefold().split()) == " ".join(b.casefold().split())


def test_decontam_on_prompt_rows_finds_an_eval_set_used_as_prompts(shared_data):
    """AlpacaEval's own prompts, ingested as prompt rows, are every one contaminated by the bundled AlpacaEval."""
    frame = read_rows(SourceSpec(name="ae", path=str(shared_data / "evals/alpaca_eval_text_davinci_003_outputs.json")))
    result = assert_stage_contract(build_stage({"stage": "decontam", "evals": ["alpaca_eval"]}), frame)
    assert (result.stats.rows_in, result.stats.rows_kept, result.stats.dropped) == (805, 0, {"contaminated": 805})


def test_consistency_is_for_preference_rows_only(prompts):
    with pytest.raises(ValueError, match="the consistency stage needs preference rows"):
        build_stage({"stage": "consistency"}).run(prompts.head(5))


# --- prompt rows as the prompts of preferences -------------------------------------------------------------------


def test_load_prompts_takes_ingested_prompt_rows(sharegpt, prompts):
    loaded = load_prompts(sharegpt[1])  # the folder ingest wrote
    assert loaded.height == 2861
    assert loaded["messages"].to_list() == prompts["messages"].to_list()  # the whole conversation is the prompt
    assert loaded["prompt"].to_list() == prompts["messages"].list.last().struct.field("content").to_list()
    # prompt_id hashes the turns alone: the same prompt from an SFT row or a prompt row gets the same prompt_id.
    assert loaded["prompt_id"][0] == content_id({"messages": prompts["messages"][0].to_list()}) != prompts["id"][0]


def test_load_prompts_takes_prompt_and_sft_rows_together(shared_data, prompts):
    sft = read_rows(SourceSpec(name="alpaca", path=str(shared_data / "llama_factory/alpaca_en_demo.json"), limit=3))
    loaded = load_prompts(pl.concat([prompts.head(2), sft]))
    assert loaded.height == 5
    assert [len(m) for m in loaded["messages"].to_list()] == [1, 1, 1, 1, 1]
    assert loaded["prompt"][2] == sft["messages"][0][0]["content"]  # the SFT row's answer is left out


PROMPT_RECIPE = """
name: from-prompts
sources:
  - {name: my_prompts, path: prompts.json}
  - {name: alpaca, path: alpaca.json}
preferences:
  prompts: [my_prompts]
  responders: [{temperature: 0.3}, {temperature: 1.0}]
"""


def test_a_recipe_source_name_is_valid_in_preferences_prompts(tmp_path):
    (tmp_path / "prompts.json").write_text("[]")
    (tmp_path / "alpaca.json").write_text("[]")
    path = tmp_path / "r.yaml"
    path.write_text(PROMPT_RECIPE)
    recipe = load_recipe(path)
    assert recipe.prompt_names() == ["my_prompts"]
    path.write_text(PROMPT_RECIPE.replace("prompts: [my_prompts]", "prompts: [my_promts]"))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "preferences.prompts names ['my_promts'], which is no source or generator of this recipe" in str(err.value)
    assert "['alpaca', 'my_prompts']" in str(err.value)


def test_prompt_sources_feed_preferences_and_never_the_mix(shared_data, tmp_path):
    recipe = load_recipe({
        "name": "from-prompts",
        "sources": [{"name": "my_prompts", "path": str(ROOT / "recipes/data/sharegpt_first_turns.json")},
                    {"name": "alpaca", "path": str(shared_data / "llama_factory/alpaca_en_demo.json"), "limit": 20}],
        "preferences": {"responders": [{"temperature": 0.3}, {"temperature": 1.0}]},
        "output": {"dir": str(tmp_path)},
    })
    parts = {name: str(curation.ingest_part(recipe, name)[0]) for name in ("my_prompts", "alpaca")}
    assert curation.part_kind(parts["my_prompts"]) == "prompt"
    # Without `preferences.prompts`, the generators (none here) and every source of prompt rows give the prompts.
    assert curation.prompt_parts(recipe, parts) == ["my_prompts"]
    # Without `mix.sources`, the prompt source is left out of the mix; named there, it is an error.
    frame, _ = curation.gather(recipe, parts)
    assert frame["source"].unique().to_list() == ["alpaca"] and frame.height == 20
    named = recipe.model_copy(update={"mix": MixSpec.model_validate({"sources": {"my_prompts": {"fraction": 1.0}}})})
    with pytest.raises(ValueError, match=r"mix.sources names \['my_prompts'\], which hold prompt rows"):
        curation.gather(named, parts)
    with pytest.raises(MixError, match="Name them in `preferences.prompts`"):
        mix_sources({"my_prompts": MixStore(parts["my_prompts"]).read()}, MixSpec(), seed=0)


def test_inspect_shows_prompt_rows(sharegpt):
    console = Console(record=True, width=160)
    render_inspect(sharegpt[1], rows=1, console=console)
    text = console.export_text()
    assert "splits (prompt rows)" in text
    assert "ingest-sharegpt: 2,978 in, 2,861 kept (format sharegpt, prompt)" in text
    assert "not_ending_with_user" in text and "(prompt row: awaiting a response)" in text


# --- the shipped recipes -------------------------------------------------------------------------------------------


def test_shipped_recipes_name_prompt_sources_in_preferences():
    from alignmix.flows.recipes import resolve_recipe

    demo = resolve_recipe("prompts-demo")
    assert demo.prompt_names() == ["my_prompts"] and "my_prompts" not in demo.mix.sources
    frame = read_rows(demo.sources[0])
    assert frame.height == 8 and row_kind(frame) == "prompt"
    full = yaml.safe_load((ROOT / "recipes/ultrafeedback-mix.yaml").read_text())
    names = {s["name"] for s in full["sources"]}
    prompt_sources = [n for n in full["preferences"]["prompts"] if n in names]
    assert prompt_sources and not set(prompt_sources) & set(full["mix"]["sources"])


@pytest.mark.slow
def test_prompts_demo_builds_pairs_from_its_prompt_file(tmp_path):
    """recipes/prompts-demo.yaml end to end on the default model: 8 prompts -> 16 responses -> pairs -> mix."""
    recipe = yaml.safe_load((ROOT / "recipes/prompts-demo.yaml").read_text())
    recipe["sources"][0]["path"] = str(ROOT / "recipes" / recipe["sources"][0]["path"])
    recipe["output"]["dir"] = str(tmp_path / "out")
    path = tmp_path / "prompts-demo.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = subprocess.run([str(Path(sys.executable).parent / "alignmix"), "build", str(path)], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    mix = MixStore(tmp_path / "out" / "prompts-demo")
    stats = mix.all_stats()
    assert stats["ingest-my_prompts"]["kind"] == "prompt" and stats["ingest-my_prompts"]["rows_kept"] == 8
    responses = stats["responses-prompt_prefs"]
    assert responses["prompts"] == 8 and responses["responses_per_prompt"] == 2
    binarized = stats["binarize-prompt_prefs"]
    assert binarized["rows_in"] == 8 == binarized["rows_kept"] + sum(binarized["dropped"].values())
    pairs = mix.read()
    assert row_kind(pairs) == "preference" and set(pairs["source"]) == {"prompt_prefs"}
    asked = {p["conversations"][0]["value"] for p in json.loads((ROOT / recipe["sources"][0]["path"]).read_text())}
    assert set(pairs["prompt"]) <= asked and pairs.height == stats["quality"]["rows_kept"] > 0
