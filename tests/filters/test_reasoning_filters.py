"""Reasoning-aware curation: the reasoning stage's rules (empty, loops, language switching), reasoning lengths and
caps in the length stage with the length-bias check on answers, decontamination on the problem text; drop rates
on the real reasoning files."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from alignmix.filters.decontam import Decontaminate
from alignmix.filters.length import LengthFilter
from alignmix.filters.quality import QualityFilter
from alignmix.filters.reasoning import ReasoningFilter, most_repeated_sentence, repeated_paragraphs
from alignmix.filters.registry import build_stage
from alignmix.pipeline.schema import preference_row, sft_row, to_frame
from tests.conftest import SHARED_DATA
from tests.filters.rows import by_source_id, jsonl
from tests.filters.test_verify import MINERVA, MINERVA_COLUMNS, R1, R1_COLUMNS, ingest
from tests.stage_contract import assert_stage_contract

STEPS = [
    "First I write down what the problem gives: a speed of 12 metres per second.",
    "Then the time is the distance divided by the speed, which is 60 over 12.",
    "That gives 5 seconds, and the units agree, so the result is consistent.",
    "Finally I check it by multiplying back: 5 times 12 is 60 metres.",
]
GOOD = "\n\n".join(STEPS)
LOOPING = "\n\n".join(STEPS + STEPS[1:3] * 2)  # 8 paragraphs, 4 of them repeats: 0.5
CHATTY = "\n\n".join(f"Step {k}: hmm, {STEPS[k % 4]} Alternatively, perhaps I need to recheck the numbers."
                     for k in range(11))
CHINESE = (
    "首先，我们需要确定题目给出的速度和距离，然后用距离除以速度来计算所需的时间，这是最直接的方法，不需要别的公式。"
    "\n\n"
    "所以时间等于六十除以十二，结果是五秒，这个答案的单位也是正确的，我们可以再检查一遍：五乘以十二等于六十米。"
)


def thinking(i: str, reasoning: str | None, *, user: str = "How long does it take?", meta=None, answer="5 seconds."):
    turn = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    return sft_row([{"role": "user", "content": user}, turn], source="t", source_id=i, meta=meta)


def test_each_reasoning_rule_drops_its_row():
    frame = to_frame([
        thinking("good", GOOD),
        thinking("plain", None),
        thinking("empty", ""),
        thinking("no_think", "", user="How long does it take? /no_think"),
        thinking("meta_off", "", user="How long, then?", meta={"thinking": {"enable_thinking": False}}),
        thinking("loop", LOOPING),
        thinking("chatty", CHATTY),
        thinking("switch", GOOD + "\n\n" + CHINESE),
    ], "sft")
    kept, rejected, _ = assert_stage_contract(ReasoningFilter(), frame)
    share, n = repeated_paragraphs(LOOPING)
    assert (share, n) == (0.5, 8)
    repeats, sentence = most_repeated_sentence(CHATTY)
    assert repeats == 11 and sentence.startswith("alternatively, perhaps")
    switch = rejected.filter(pl.col("source_id") == "switch")["language_switch_share"].item()
    chinese = sum(len(p) for p in CHINESE.split("\n\n"))
    assert switch == round(chinese / (chinese + sum(len(p) for p in STEPS)), 4) and switch > 0.2
    assert by_source_id(rejected) == {
        "empty": ("empty_reasoning", "response: empty reasoning"),
        "loop": ("reasoning_loop", "response: 0.5 of 8 paragraphs repeat"),
        "chatty": ("reasoning_loop", f"response: a sentence 11 times: {sentence[:60]!r}"),
        "switch": ("language_switch", f"response: {switch} not in en (zh)"),
    }
    assert sorted(kept["source_id"]) == ["good", "meta_off", "no_think", "plain"]
    plain = kept.filter(pl.col("source_id") == "plain")
    assert plain.select("repeated_paragraph_share", "reasoning_lang", "language_switch_share").row(0) == (None, None, None)
    assert kept.filter(pl.col("source_id") == "good")["reasoning_lang"].item() == "en"
    # each limit can be switched off
    off = {"empty_reasoning": False, "max_repeated_paragraph_share": None, "max_sentence_repeats": None,
           "max_language_switch": None}
    _, rejected, _ = assert_stage_contract(build_stage({"stage": "reasoning", **off}), frame)
    assert rejected.height == 0


def test_preference_rows_check_chosen_or_both():
    user = {"role": "user", "content": "How long?"}

    def side(reasoning: str) -> list[dict]:
        return [user, {"role": "assistant", "content": "5 s", "reasoning_content": reasoning}]

    frame = to_frame([
        preference_row("How long?", side(GOOD), side(LOOPING), source="t", source_id="rejected_loops"),
        preference_row("How long?", side(LOOPING), side(GOOD), source="t", source_id="chosen_loops"),
    ], "preference")
    _, rejected, _ = assert_stage_contract(ReasoningFilter(), frame)
    assert by_source_id(rejected) == {"chosen_loops": ("reasoning_loop", "chosen: 0.5 of 8 paragraphs repeat")}
    _, rejected, _ = assert_stage_contract(ReasoningFilter({"responses": "both"}), frame)
    assert by_source_id(rejected)["rejected_loops"] == ("reasoning_loop", "rejected: 0.5 of 8 paragraphs repeat")


def test_length_counts_reasoning_apart_and_checks_bias_on_answers():
    long_reasoning = " ".join(["think"] * 300)
    user = {"role": "user", "content": "Name the capital."}
    rows = [
        # chosen thinks 300 words, rejected none: the answers are 3 words each, so no length bias
        preference_row("Name the capital.",
                       [user, {"role": "assistant", "content": "It is Paris.", "reasoning_content": long_reasoning}],
                       [user, {"role": "assistant", "content": "It is Lyon."}], source="t", source_id="p")
    ]
    scored = LengthFilter().score(to_frame(rows, "preference"))
    assert scored.select("chosen_len", "rejected_len", "len_ratio", "chosen_reasoning_len",
                         "rejected_reasoning_len").row(0) == (3, 3, 1.0, 300, None)
    frame = to_frame([thinking("short", GOOD), thinking("long", long_reasoning), thinking("none", None)], "sft")
    kept, rejected, stats = assert_stage_contract(LengthFilter({"max_reasoning": 200}), frame)
    assert by_source_id(rejected) == {"long": ("reasoning_too_long", "response reasoning: 300 > 200")}
    assert dict(zip(kept["source_id"], kept["reasoning_len"])) == {"short": len(GOOD.split()), "none": None}
    assert stats.distributions["reasoning_len"]["n"] == 2 and stats.distributions["reasoning_len"]["null"] == 1
    _, rejected, _ = assert_stage_contract(LengthFilter({"min_reasoning": 100}), frame)
    assert by_source_id(rejected) == {"short": ("reasoning_too_short", f"response reasoning: {len(GOOD.split())} < 100")}


def test_quality_rules_read_the_answer_not_the_reasoning():
    looping_reasoning = " ".join(["I like trains and"] * 12)
    frame = to_frame([thinking("r", looping_reasoning), thinking("a", "fine", answer=looping_reasoning)], "sft")
    _, rejected, _ = assert_stage_contract(QualityFilter(), frame)
    assert list(rejected["source_id"]) == ["a"]


def test_decontamination_reads_the_problem_not_the_reasoning():
    from alignmix.filters.evalsets import read_eval_items, resolve

    question = read_eval_items(resolve(["gsm8k"])[0])[17][0]
    frame = to_frame([
        thinking("quoted", f"This looks like a known problem: {question}"),
        thinking("asked", GOOD, user=question),
    ], "sft")
    _, rejected, _ = assert_stage_contract(Decontaminate({"evals": ["gsm8k"]}), frame)
    assert list(rejected["source_id"]) == ["asked"] and rejected["contam_match"].item() == "gsm8k#17"


# --- real files: drop rates of every rule ------------------------------------------------------------------------


def _cut_traces(name: str) -> pl.DataFrame:
    """The Sky-T1 outputs cut inside their thought block (rejected at ingest as unclosed_reasoning), as thinking
    rows: what the reasoning rules would see if such traces were kept (their answer is a placeholder)."""
    rows = []
    for i, record in enumerate(jsonl(MINERVA[name])):
        text = record["code"][0]
        if "<|begin_of_thought|>" in text and "<|end_of_thought|>" not in text:
            reasoning = text.split("<|begin_of_thought|>", 1)[1].strip()
            rows.append(thinking(str(i), reasoning, user=record["question"], answer="(cut)"))
    return to_frame(rows, "sft")


@pytest.mark.skipif(not (SHARED_DATA / "reasoning").exists(), reason="needs ../shared/data/reasoning")
def test_drop_rates_on_real_traces():
    """The defaults drop no complete trace of either model family; of the traces cut at the token limit inside
    their reasoning, they drop the ones that loop."""
    r1, _ = ingest(R1, R1_COLUMNS, "r1")
    result = assert_stage_contract(ReasoningFilter(), r1)
    assert (result.stats.rows_in, result.stats.dropped) == (413, {})
    assert result.kept["language_switch_share"].max() < 0.05
    for name, cut_loops in (("a", 14), ("b", 40)):
        closed, _ = ingest(MINERVA[name], MINERVA_COLUMNS, name)
        result = assert_stage_contract(ReasoningFilter(), closed)
        assert result.stats.dropped == {}, name
        cut = _cut_traces(name)
        result = assert_stage_contract(ReasoningFilter(), cut)
        assert (cut.height, result.stats.dropped) == ({"a": 43, "b": 65}[name], {"reasoning_loop": cut_loops})


@pytest.mark.skipif(not R1.exists(), reason="needs ../shared/data/reasoning")
def test_reasoning_length_distribution_of_r1_traces():
    r1, _ = ingest(R1, R1_COLUMNS, "r1")
    _, rejected, stats = assert_stage_contract(LengthFilter({"max_reasoning": 4000}), r1)
    lengths = np.array([len(t.split()) for t in r1["messages"].list.last().struct.field("reasoning_content")])
    assert stats.distributions["reasoning_len"]["n"] == 413
    assert stats.distributions["reasoning_len"]["p50"] == float(np.percentile(lengths, 50))
    assert Counter(rejected["drop_reason"]) == {"reasoning_too_long": int((lengths > 4000).sum())}
    assert int((lengths > 4000).sum()) == 20


def test_rows_written_before_messages_carried_reasoning():
    """Shards of the old message struct (role, content) load as they are: no reasoning, every rule passes."""
    from alignmix.filters.verify import Verify

    turns = [{"role": "user", "content": "Pick one."}, {"role": "assistant", "content": "The answer is (C)."}]
    old = pl.DataFrame({"messages": [turns] * 2, "id": ["1", "2"], "source": ["s"] * 2, "source_id": ["1", "2"],
                        "meta": ['{"ground_truth": "C"}', '{"ground_truth": "D"}']})
    assert old.schema["messages"] == pl.List(pl.Struct({"role": pl.String, "content": pl.String}))
    kept, _, _ = assert_stage_contract(LengthFilter({"max_reasoning": 1}), old)
    assert kept["reasoning_len"].to_list() == [None, None]
    kept, _, _ = assert_stage_contract(ReasoningFilter(), old)
    assert kept.height == 2 and kept["repeated_paragraph_share"].null_count() == 2
    _, rejected, _ = assert_stage_contract(Verify(), old)
    assert by_source_id(rejected) == {"2": ("wrong_answer", "extracted C, expected D (choice)")}
