"""End to end with the real default model (SmolLM2-135M-Instruct) on the transformers backend, tiny counts:
MAGPIE, Self-Instruct, responses, judging, binarization, the CLI, resume. Marked slow (they still run in CI)."""

from __future__ import annotations

import os

import orjson
import polars as pl
import pytest
from typer.testing import CliRunner

from alignmix.pipeline.schema import POLARS_SCHEMAS
from alignmix.pipeline.store import MixStore
from alignmix.synth import build_preferences, run_generator
from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend

pytestmark = pytest.mark.slow

SFT = pl.Schema(POLARS_SCHEMAS["sft"])
PREF = pl.Schema(POLARS_SCHEMAS["preference"])
MAGPIE = {
    "kind": "magpie", "name": "magpie-test", "count": 3, "requests_per_batch": 2, "seed": 5,
    "instruction": {"max_new_tokens": 24}, "response": {"max_new_tokens": 24},
}  # fmt: skip


@pytest.fixture(scope="module")
def backend():
    b = get_backend({"backend": "transformers", "model": "default", "batch_size": 16})
    b.load()
    return b


def _meta(frame: pl.DataFrame) -> list[dict]:
    return [orjson.loads(m) for m in frame["meta"].to_list()]


def test_batched_greedy_decoding_equals_one_at_a_time(backend):
    reqs = [
        GenerationRequest(messages=[{"role": "user", "content": q}], params=SamplingParams(max_new_tokens=10, temperature=0))
        for q in ("What is 2+2?", "Name one planet of the solar system, please.")
    ]
    batched = backend.generate(reqs)
    single = [backend.generate([r])[0] for r in reqs]
    assert [r.text for r in batched] == [r.text for r in single]
    assert all(r.completion_tokens > 0 for r in batched)


def test_per_request_seeds_give_different_samples(backend):
    pre = "<|im_start|>user\n"
    same_seed = [GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=8, seed=1)) for _ in range(3)]
    own_seed = [GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=8, seed=s)) for s in (1, 2, 3)]
    assert len({r.text for r in backend.generate(same_seed)}) == 1
    assert len({r.text for r in backend.generate(own_seed)}) == 3


def test_sampled_request_gives_the_same_text_alone_or_in_any_batch(backend):
    """The per-request-seed contract through `model.generate`: the row's own generator draws its tokens, and a
    row that stops early (max_new_tokens 3, or a stop string) does not change the others."""
    pre = "<|im_start|>user\n"
    target = GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=12, seed=7, stop=("<|im_end|>",)))
    others = [
        GenerationRequest(prompt=pre, params=SamplingParams(max_new_tokens=3, seed=8)),
        GenerationRequest(messages=[{"role": "user", "content": "Say hi."}], params=SamplingParams(max_new_tokens=12, temperature=0)),
    ]
    alone = backend.generate([target])[0]
    mixed = backend.generate([others[0], target, others[1]])
    assert mixed[1] == alone
    assert mixed[0].completion_tokens == 3 and mixed[0].finish_reason == "length"
    assert alone.completion_tokens > 0


def test_magpie_rows_meta_counts_and_resume(backend, tmp_path):
    out = tmp_path / "magpie"
    stats = run_generator(MAGPIE, out, backend=backend)
    store = MixStore(out)
    kept, rejected = store.read(), pl.read_parquet(store.rejected_path("magpie"))
    assert kept.schema == SFT
    assert (stats["rows_in"], stats["batches"]) == (3, 2)
    assert stats["rows_kept"] == kept.height and kept.height + rejected.height == 3
    assert sum(stats["dropped"].values()) == rejected.height
    assert set(rejected["drop_reason"]) <= {"empty_instruction", "truncated_instruction", "empty_response", "truncated_response"}
    assert stats["template"] == "derived" and stats["model"] == "default"
    metas = _meta(kept) + _meta(rejected)
    assert {m["pre_query_template"] for m in metas} == {
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\n"
    }
    assert all(m["instruction_sampling"]["max_new_tokens"] == 24 and m["run_seed"] == 5 for m in metas)
    assert len({m["seeds"][0] for m in metas}) == 3  # every request its own seed
    for row in kept.iter_rows(named=True):
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    # Resume: drop the second batch and the stage record; the first batch is reused, not regenerated.
    first = out / "batches" / "magpie" / "00000.kept.parquet"
    before = os.stat(first).st_mtime_ns
    (out / "batches" / "magpie" / "00001.kept.parquet").unlink()
    (out / "stats" / "magpie.json").unlink()
    again = run_generator(MAGPIE, out, backend=backend)
    assert os.stat(first).st_mtime_ns == before
    assert again["outputs"] == stats["outputs"]  # same config and seeds: the same bytes


def test_magpie_two_turns_with_a_system_prompt(backend, tmp_path):
    spec = {**MAGPIE, "count": 1, "n_turns": 2, "system_prompts": [{"text": "You answer in one sentence."}],
            "instruction": {"max_new_tokens": 40}, "response": {"max_new_tokens": 40}}  # fmt: skip
    stats = run_generator(spec, tmp_path / "mt", backend=backend)
    store = MixStore(tmp_path / "mt")
    kept = store.read()
    assert stats["rows_in"] == 1
    for row, meta in zip(kept.iter_rows(named=True), _meta(kept)):
        assert row["messages"][0] == {"role": "system", "content": "You answer in one sentence.", "reasoning_content": None}
        assert meta["system_prompt"] == "You answer in one sentence."
        assert len(row["messages"]) == 1 + 2 * meta["n_turns"]


def test_self_instruct_rows_and_filters(backend, tmp_path):
    spec = {"kind": "self_instruct", "name": "si-test", "count": 3, "requests_per_batch": 2, "max_batches": 2,
            "instruction": {"max_new_tokens": 48}, "instance": {"max_new_tokens": 24}}  # fmt: skip
    stats = run_generator(spec, tmp_path / "si", backend=backend)
    store = MixStore(tmp_path / "si")
    kept, rejected = store.read(), pl.read_parquet(store.rejected_path("self_instruct"))
    assert kept.schema == SFT
    assert stats["batches"] >= 1 and stats["counters"]["requests"] == 2 * stats["batches"]
    assert stats["rows_in"] == kept.height + rejected.height == stats["counters"]["parsed_instructions"]
    assert stats["rows_kept"] == kept.height <= 3
    assert set(rejected["drop_reason"]) <= {
        "empty_instruction", "instruction_length", "keyword_filtered", "bad_start", "truncated_instruction",
        "rouge_similar", "count_reached", "truncated_instance", "instance_unparseable", "empty_output", "empty_input",
    }  # fmt: skip
    for row, meta in zip(kept.iter_rows(named=True), _meta(kept)):
        assert row["messages"][0]["content"].startswith(meta["instruction"])
        assert meta["rouge_l"] <= 0.7 and isinstance(meta["is_classification"], bool)
        assert meta["template"] == "chat-prefill" and meta["model"] == "default"
    similar = rejected.filter(pl.col("drop_reason") == "rouge_similar")
    assert all(float(d.split(" ")[0]) > 0.7 for d in similar["drop_detail"])


def test_preferences_end_to_end(backend, tmp_path):
    spec = {
        "name": "prefs-test", "seed": 2, "prompts_per_batch": 2,
        "responders": [{"temperature": 0.7, "max_new_tokens": 16}, {"temperature": 1.2, "max_new_tokens": 16},
                       {"temperature": 1.5, "max_new_tokens": 16}],
        # Expected ratings (probability-weighted), which rarely tie even on a 135M judge, so pairs do form;
        # 8 tokens of rationale.
        "judge": {"rating": "expected", "aspects": ["helpfulness", "honesty"], "max_new_tokens": 8, "pairwise": True},
        "binarize": {"rejected": "lowest"},
    }  # fmt: skip
    prompts = ["Name a large river in Europe.", "What is the capital of Japan?", "Give one tip for sleeping well."]
    stats = build_preferences(prompts, spec, tmp_path / "prefs")
    r, j, b = stats["responses"], stats["judge"], stats["binarize"]
    assert r["rows_in"] == 9 and r["rows_kept"] + sum(r["dropped"].values()) == 9
    assert j["rows_in"] == j["rows_kept"] == r["rows_kept"] == j["counters"]["judged"]
    assert b["rows_in"] == 3 and b["rows_kept"] + sum(b["dropped"].values()) == 3 == b["prompts"]
    assert b["unrated_responses"] == j["counters"]["unparseable"]
    store = MixStore(tmp_path / "prefs")
    pairs = store.read() if b["pairs"] else None
    assert b["pairs"] == b["rows_kept"] == (pairs.height if pairs is not None else 0)
    assert b["pairs"] >= 1 and b["pairwise_judged"] == b["pairs"]
    if pairs is not None:
        assert pairs.schema == PREF
        for row, meta in zip(pairs.iter_rows(named=True), _meta(pairs)):
            assert row["score_chosen"] > row["score_rejected"]
            assert meta["judge"]["model"] == "default" and len(meta["all_scores"]) >= 2
            assert set(meta["chosen"]["ratings"]) == {"helpfulness", "honesty"}
            assert meta["chosen"]["raw"]["helpfulness"].startswith("Rating:")
            assert [v["first"] for v in meta["pairwise"]["verdicts"]] == ["chosen", "rejected"]
            assert meta["pairwise"]["consistent"] in (True, False, None)
            assert set(meta["finish_reason"]) == {"chosen", "rejected"}
            assert meta["finish_reason"]["chosen"] == meta["chosen"]["finish_reason"] in ("stop", "length")
    rejected = pl.read_parquet(store.rejected_path("binarize"))
    assert set(rejected["drop_reason"]) <= {"score_tie", "judge_unparseable", "too_few_responses"}
    rated = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "prefs" / "batches" / "judge").glob("*.kept.parquet"))])
    for meta in _meta(rated):
        judge = meta["judge"]
        assert set(judge["raw"]) == set(judge["ratings"])
        assert judge["parsed"] == all(v is not None for v in judge["ratings"].values())
    # A second call finds every stage done and returns the same stats.
    assert build_preferences(prompts, spec, tmp_path / "prefs") == stats


def test_cli_generate_and_judge(backend, tmp_path):
    from alignmix.cli import app

    cfg = tmp_path / "magpie.yaml"
    cfg.write_text("instruction: {max_new_tokens: 16}\nresponse: {max_new_tokens: 16}\nrequests_per_batch: 2\n")
    runner = CliRunner()
    res = runner.invoke(app, ["generate", "magpie", "--count", "2", "--out", str(tmp_path / "m"), "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "magpie: 2 in" in res.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Say hello.\nName a color.\n")
    res = runner.invoke(app, ["generate", "responses", str(prompts), "--out", str(tmp_path / "r"),
                              "--temperatures", "0.8,1.4", "--max-new-tokens", "8"])  # fmt: skip
    assert res.exit_code == 0, res.output
    responses = MixStore(tmp_path / "r").read()
    assert responses.schema == SFT and responses.height + MixStore(tmp_path / "r").read_rejected().height == 4
    cfg = tmp_path / "judge.yaml"
    cfg.write_text("judge: {max_new_tokens: 4}\n")
    res = runner.invoke(app, ["judge", str(tmp_path / "r"), "--out", str(tmp_path / "j"), "--binarize", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "judge:" in res.output and "binarize:" in res.output
    res = runner.invoke(app, ["generate", "magpie", "--count", "0", "--out", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "count" in res.output
