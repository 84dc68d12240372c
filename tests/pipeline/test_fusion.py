"""Thinking-mode fusion in the mix: shares, Qwen3's flags and empty think block, ids, errors. Thinking rows are real
DeepSeek-R1 traces (ingested with a column mapping); their non-thinking twins are the same rows with `mode:
non_thinking`."""

from __future__ import annotations

import polars as pl
import pytest
from pydantic import ValidationError

from alignmix.pipeline.ingest import read_rows
from alignmix.pipeline.mixing import MixError, mix_sources
from alignmix.pipeline.recipe import MixSpec, SourceSpec
from alignmix.pipeline.schema import content_id, preference_row, sft_row, to_frame

COLUMNS = {"prompt": "question", "reasoning": "reasoning", "response": "answer_text", "ground_truth": "answer_letter"}


@pytest.fixture(scope="module")
def r1(shared_data):
    path = shared_data / "reasoning" / "r1_mmlu_pro_traces.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return read_rows(SourceSpec(name="r1", path=str(path), columns=COLUMNS, limit=30))


def _mix(curated, seed=3, **mix):
    return mix_sources(curated, MixSpec.model_validate(mix), seed)


def test_shares_flags_and_empty_block(r1):
    answers = {m[0]["content"]: m[-1]["content"] for m in r1["messages"].to_list()}
    result = _mix({"r1": r1, "direct": r1}, test_fraction=0.1, fusion={"thinking": 0.7},
                  sources={"r1": {"fraction": 1.0}, "direct": {"fraction": 1.0, "mode": "non_thinking"}})
    fusion = result.stats["fusion"]
    # 30 thinking and 30 direct drawn: 30 / 0.7 * 0.3 = 12.86 -> 13 direct rows stay
    assert (fusion["before"]["thinking"], fusion["before"]["non_thinking"]) == (30, 30)
    assert (fusion["after"]["thinking"], fusion["after"]["non_thinking"]) == (30, 13)
    assert fusion["thinking_share"] == round(30 / 43, 6) and fusion["after"]["by_source"]["direct"]["non_thinking"] == 13
    both = result.train.vstack(result.test)
    assert both.height == result.stats["rows"]["total"] == 43
    for row in both.iter_rows(named=True):
        user, last = row["messages"][-2], row["messages"][-1]
        question = user["content"].rsplit(" ", 1)[0]
        assert row["id"] == content_id(row) and last["content"] == answers[question]
        if row["mode"] == "thinking":
            assert row["source"] == "r1" and user["content"].endswith(" /think") and len(last["reasoning_content"]) > 100
        else:
            assert row["source"] == "direct" and user["content"].endswith(" /no_think") and last["reasoning_content"] == ""
    again = _mix({"r1": r1, "direct": r1}, test_fraction=0.1, fusion={"thinking": 0.7},
                 sources={"r1": {"fraction": 1.0}, "direct": {"fraction": 1.0, "mode": "non_thinking"}})
    assert again.train.equals(result.train) and again.test.equals(result.test)


def test_share_thins_the_thinking_side_too(r1):
    result = _mix({"r1": r1, "direct": r1}, fusion={"thinking": 0.25, "flags": "none", "empty_think": False},
                  sources={"r1": {"count": 20}, "direct": {"fraction": 1.0, "mode": "non_thinking"}})
    after = result.stats["fusion"]["after"]
    assert (after["thinking"], after["non_thinking"]) == (10, 30)  # 30 / 0.75 * 0.25 = 10
    direct = result.train.filter(result.train["mode"] == "non_thinking")
    assert all(m[-1]["reasoning_content"] is None and not m[-2]["content"].endswith("think") for m in direct["messages"])


def test_pairs_are_flagged_on_every_side():
    turns = [{"role": "user", "content": "2 + 2?"}]
    think = preference_row("2 + 2?", turns + [{"role": "assistant", "content": "4", "reasoning_content": "two and two"}],
                           turns + [{"role": "assistant", "content": "5", "reasoning_content": "two and three"}],
                           source="p", source_id="0")
    plain = preference_row("2 + 2?", turns + [{"role": "assistant", "content": "Four."}],
                           turns + [{"role": "assistant", "content": "Five."}], source="q", source_id="0")
    result = _mix({"p": to_frame([think], "preference"), "q": to_frame([plain], "preference")}, fusion={})
    rows = {r["source"]: r for r in result.train.iter_rows(named=True)}
    assert rows["p"]["prompt"] == "2 + 2? /think" and rows["q"]["prompt"] == "2 + 2? /no_think"
    for side in ("chosen", "rejected"):
        assert rows["p"][side][0]["content"] == "2 + 2? /think" and rows["p"][side][-1]["reasoning_content"]
        assert rows["q"][side][0]["content"] == "2 + 2? /no_think" and rows["q"][side][-1]["reasoning_content"] == ""
    assert result.stats["fusion"]["asked_thinking_share"] is None and result.stats["fusion"]["thinking_share"] == 0.5


def test_modes_that_cannot_hold_are_errors(r1):
    plain = to_frame([sft_row([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
                              source="plain", source_id="0")], "sft")
    with pytest.raises(MixError, match=r"mix.sources.plain.mode = thinking, but 1 of its 1 rows have no reasoning"):
        _mix({"plain": plain}, fusion={}, sources={"plain": {"fraction": 1.0, "mode": "thinking"}})
    with pytest.raises(MixError, match="no non_thinking row was drawn"):
        _mix({"r1": r1}, fusion={"thinking": 0.5})
    with pytest.raises(ValidationError, match="only thinking-mode fusion reads"):
        MixSpec.model_validate({"sources": {"r1": {"fraction": 1.0, "mode": "non_thinking"}}})


def test_card_shows_shares_lengths_and_verified_accuracy(r1, tmp_path):
    """Real R1 rows through the verify stage (curate_frames), a fused mix (build_mix) and its card."""
    from alignmix.data_cards.card import write_card
    from alignmix.filters.registry import build_stage
    from alignmix.filters.apply import curate_frames
    from alignmix.pipeline.mix_build import build_mix
    from alignmix.pipeline.recipe import load_recipe
    from alignmix.pipeline.store import MixStore

    recipe = load_recipe({"name": "fused", "seed": 1, "output": {"dir": str(tmp_path)}, "mix": {
        "sources": {"r1": {"fraction": 1.0}, "direct": {"count": 10, "mode": "non_thinking"}}, "fusion": {"thinking": 0.6}}})
    store = MixStore(tmp_path / "fused")
    direct = r1.with_columns(pl.lit("direct").alias("source"))
    curated = curate_frames({"r1": r1, "direct": direct}, [build_stage({"stage": "verify"})], store)
    build_mix(recipe, curated, tmp_path)
    record = MixStore(tmp_path / "fused").read_stats("mix")["reasoning"]
    assert record["by_source"]["direct"] == {**record["by_source"]["direct"], "rows": 10, "thinking": 0}
    assert record["by_source"]["r1"]["rows"] == record["by_source"]["r1"]["thinking"] == 15  # 10 / 0.4 * 0.6
    words = [len(m[-1]["reasoning_content"].split(" ")) for m in r1["messages"].to_list()]
    assert record["by_source"]["r1"]["reasoning_words"]["n"] == 15 and min(words) <= record["by_source"]["r1"]["reasoning_words"]["p50"] <= max(words)
    verify = curated["r1"].height  # every R1 trace in the file was right (its own checker kept only those)
    assert record["verified"]["verify/r1"]["verdicts"]["correct"] == verify and record["verified"]["verify/r1"]["accuracy"] == 1.0
    card = (tmp_path / "fused" / "README.md").read_text(encoding="utf-8") if write_card(tmp_path / "fused") else ""
    section = card.split("## Reasoning", 1)[1].split("\n## ", 1)[0]
    assert "60.0% of the rows drawn are thinking rows (asked: 60.0%)" in section and "| verify | r1 |" in section
