"""The verify stage: answers checked against meta.ground_truth by choice letter, math-verify and exact match, on
designed rows (one per rule) and on the real reasoning files ingested through a column mapping."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import polars as pl
import pytest

from alignmix.filters.registry import build_stage
from alignmix.filters.verify import Verify, check_answer, extract_choice
from alignmix.pipeline.schema import preference_row, sft_row, to_frame
from tests.conftest import SHARED_DATA
from tests.filters.rows import by_source_id, jsonl
from tests.stage_contract import assert_stage_contract

REASONING = SHARED_DATA / "reasoning"
R1 = REASONING / "r1_mmlu_pro_traces.jsonl"
MINERVA = {name: REASONING / f"skyt1_minerva_model_{name}.jsonl" for name in ("a", "b")}
R1_COLUMNS = {"prompt": "question", "options": "options", "reasoning": "reasoning", "response": "answer_text",
              "ground_truth": "answer_letter"}
MINERVA_COLUMNS = {"prompt": "question", "response": "code[0]", "ground_truth": "gt"}


def trace(i: str, answer: str, truth: str | None, *, reasoning: str | None = "Let me think.", meta=None) -> dict:
    meta = {**({"ground_truth": truth} if truth is not None else {}), **(meta or {})}
    turn = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    return sft_row([{"role": "user", "content": f"Problem {i}"}, turn], source="t", source_id=i, meta=meta)


def pair(i: str, chosen: str, rejected: str, truth: str) -> dict:
    user = {"role": "user", "content": f"Problem {i}"}
    return preference_row(f"Problem {i}", [user, {"role": "assistant", "content": chosen, "reasoning_content": "Hm."}],
                          [user, {"role": "assistant", "content": rejected, "reasoning_content": "Hm."}],
                          source="t", source_id=i, meta={"ground_truth": truth})


def test_choice_letters_in_the_forms_models_write_them():
    assert extract_choice("All but C fail, so the answer is (C).") == "C"
    assert extract_choice("**Answer: D**") == "D"
    assert extract_choice("**Final Answer:** $\\boxed{B}$") == "B"
    assert extract_choice("The answer is: option J") == "J"
    assert extract_choice("(E) 42 m/s") == "E"
    assert extract_choice("A") == "A"
    # the last statement wins; a word that starts with a letter is not a letter
    assert extract_choice("At first the answer is (A). On reflection, the answer is (B).") == "B"
    assert extract_choice("Answer: Because of the heat.") is None
    assert extract_choice("I cannot tell.") is None


def test_math_and_exact_checks():
    assert check_answer("So $\\boxed{\\frac{1}{2}}$.", "0.5").status == "correct"
    assert check_answer("There are 15,000 of them: \\boxed{15000}", "15000").status == "correct"
    assert check_answer("The critical angle is \\boxed{\\arcsin(1/1.3)}", "\\arcsin(\\frac{1}{1.3})").status == "correct"
    wrong = check_answer("Therefore \\boxed{3}", "1.6")
    assert (wrong.status, wrong.extracted, wrong.detail()) == ("wrong", "3", "extracted 3, expected 1.6 (math)")
    assert check_answer("No number here at all.", "1.6").status == "no_answer"
    assert check_answer("Answer: **Paris**.", "paris").method == "exact"
    assert check_answer("Answer: **Paris**.", "paris").status == "correct"
    assert check_answer("Answer: Lyon", "Paris").status == "wrong"
    assert check_answer("anything", None).status == "no_truth"
    # checker: exact compares the whole statement, even for a truth that looks like a letter
    assert check_answer("The answer is (C).", "C", "exact").status == "wrong"
    # a list of answers accepts any; a list of numbers is math (an interval), not a list
    assert check_answer("Answer: twelve", '["12", "twelve"]').status == "correct"
    assert check_answer("Answer: eleven", '["12", "twelve"]').detail() == "extracted eleven, expected twelve (exact)"
    assert check_answer("The solution set is \\boxed{[1, 2]}", "[1, 2]").status == "correct"


def test_each_rule_on_sft_rows_reads_the_answer_not_the_reasoning():
    frame = to_frame([
        trace("right", "The answer is (C).", "C", reasoning="Maybe the answer is (A)? No."),
        trace("wrong", "The answer is (C).", "B"),
        trace("math", "Thus $\\boxed{\\frac{3}{6}}$", "0.5"),
        trace("no_truth", "The answer is (C).", None),
        trace("no_answer", "I am not sure.", "C"),
        trace("cut", "The answer is (C).", "C", meta={"finish_reason": "reasoning_length"}),
        # a trace still inline whose block never closed: cut inside its reasoning too
        trace("inline_cut", "<think>\nLet me see, the answer might be", "C", reasoning=None),
    ], "sft")
    kept, rejected, stats = assert_stage_contract(Verify(), frame)
    assert by_source_id(rejected) == {
        "wrong": ("wrong_answer", "extracted C, expected B (choice)"),
        "cut": ("truncated_reasoning", "finish_reason=reasoning_length"),
        "inline_cut": ("truncated_reasoning", "<think> is never closed by </think> (a truncated trace?)"),
    }
    verdicts = dict(zip(kept["source_id"], kept["verdict"]))
    assert verdicts == {"right": "correct", "math": "correct", "no_truth": "no_truth", "no_answer": "no_answer"}
    assert dict(zip(rejected["source_id"], rejected["extracted_answer"])) == {"wrong": "C", "cut": None, "inline_cut": None}
    counts = stats.distributions["verify"]["all"]
    assert (counts["correct"], counts["wrong"], counts["no_truth"], counts["no_answer"], counts["truncated"]) == (2, 1, 1, 1, 2)
    assert counts["accuracy"] == round(2 / 3, 4)
    # uncheckable rows can be dropped instead; truncated ones kept
    _, rejected, _ = assert_stage_contract(Verify({"drop_uncheckable": True, "drop_truncated": False}), frame)
    assert by_source_id(rejected) == {
        "wrong": ("wrong_answer", "extracted C, expected B (choice)"),
        "no_truth": ("unverifiable", "no_truth"),
        "no_answer": ("unverifiable", "no_answer"),
    }


def test_preference_rows_need_a_correct_chosen_and_a_wrong_rejected():
    frame = to_frame([
        pair("ok", "\\boxed{4}", "\\boxed{5}", "4"),
        pair("both_right", "\\boxed{4}", "It is \\boxed{4.0}", "4"),
        pair("chosen_wrong", "\\boxed{5}", "\\boxed{4}", "4"),
    ], "preference")
    kept, rejected, _ = assert_stage_contract(build_stage({"stage": "verify"}), frame)
    assert by_source_id(rejected) == {
        "both_right": ("rejected_correct", "rejected: extracted 4.0, expected 4 (math)"),
        "chosen_wrong": ("wrong_answer", "chosen: extracted 5, expected 4 (math)"),
    }
    assert kept.select("verdict_chosen", "verdict_rejected").row(0) == ("correct", "wrong")
    _, rejected, _ = assert_stage_contract(Verify({"pairs": "chosen"}), frame)
    assert by_source_id(rejected) == {"chosen_wrong": ("wrong_answer", "chosen: extracted 5, expected 4 (math)")}
    # a generated pair records each side's finish reason: a chosen cut inside its reasoning is dropped
    cut = frame.with_columns(pl.lit('{"ground_truth": "4", "finish_reason": {"chosen": "reasoning_length", '
                                    '"rejected": "stop"}}').alias("meta"))
    _, rejected, _ = assert_stage_contract(Verify(), cut)
    assert set(by_source_id(rejected).values()) == {("truncated_reasoning", "chosen: finish_reason=reasoning_length")}


def test_prompt_rows_are_refused_with_the_fix():
    from alignmix.pipeline.schema import prompt_row

    frame = to_frame([prompt_row([{"role": "user", "content": "2+2?"}], source="t", source_id="0")], "prompt")
    with pytest.raises(ValueError, match="verify SFT or preference rows"):
        Verify().run(frame)


# --- real files, through the real ingest (a column mapping) ------------------------------------------------------


def ingest(path: Path, columns: dict, source: str) -> tuple[pl.DataFrame, Counter]:
    """Rows of a real file through the column-mapping adapter `alignmix ingest --columns` uses, and the
    reasons of the records it rejects."""
    from alignmix.pipeline.columns import mapped_adapter
    from alignmix.pipeline.schema import RowError

    adapter, rows, rejects = mapped_adapter(columns), [], Counter()
    for i, record in enumerate(jsonl(path)):
        try:
            rows += adapter.convert(record, source=source, source_id=str(i))
        except RowError as err:
            rejects[err.reason] += 1
    return to_frame(rows, "sft"), rejects


@pytest.mark.skipif(not R1.exists(), reason="needs ../shared/data/reasoning (real public data)")
def test_r1_mmlu_pro_traces_all_verify_and_match_the_files_own_letters(tmp_path):
    from alignmix.filters.apply import read_rows
    from alignmix.pipeline.columns import ColumnMap
    from alignmix.pipeline.ingest import ingest_sources

    ingest_sources([str(R1)], tmp_path / "r1", columns=ColumnMap(**R1_COLUMNS))  # what `alignmix ingest` runs
    frame = read_rows(tmp_path / "r1")
    assert frame.height == 413
    kept, rejected, stats = assert_stage_contract(Verify(), frame)
    assert (kept.height, rejected.height) == (413, 0)
    assert stats.distributions["verify"]["all"]["correct"] == 413
    # the letter read from each answer is the one the file's own checker recorded (predicted_letter)
    predicted = {str(i): r["predicted_letter"] for i, r in enumerate(jsonl(R1))}
    extracted = dict(zip(kept["source_id"], kept["extracted_answer"]))
    assert len(extracted) == 413 and all(extracted[k] == predicted[k] for k in extracted)
    # the same answers against a shifted key: every one is wrong, none uncheckable
    shifted = frame.with_columns(pl.col("meta").map_elements(_shift_truth, return_dtype=pl.String))
    _, rejected, _ = assert_stage_contract(Verify(), shifted)
    assert rejected["drop_reason"].value_counts().rows() == [("wrong_answer", 413)]


def _shift_truth(meta: str) -> str:
    m = orjson.loads(meta)
    m["ground_truth"] = "ABCDEFGHIJ"[("ABCDEFGHIJ".index(m["ground_truth"]) + 1) % 10]
    return orjson.dumps(m).decode()


# name: (rows, ingest rejects, verdicts of the parsed rows, (ours, file's score) agreement)
MINERVA_FIGURES = {
    "a": (272, {"unclosed_reasoning": 43, "unclosed_answer": 14},
          {"correct": 86, "wrong_or_timeout": 128, "no_answer": 1},
          {("correct", True): 67, ("correct", False): 19, ("wrong", True): 5}),
    "b": (272, {"unclosed_reasoning": 65, "unclosed_answer": 31},
          {"correct": 76, "wrong_or_timeout": 100, "no_answer": 0},
          {("correct", True): 55, ("correct", False): 21, ("wrong", True): 6}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a", "b"])
def test_minerva_outputs_verify_with_math_verify(name):
    """Sky-T1 outputs on Minerva-Math: the traces cut inside the thought block are rejected at ingest; the rest
    are checked with math-verify and compared with the file's own grader (Qwen2.5-Math's `score`)."""
    if not MINERVA[name].exists():
        pytest.skip("needs ../shared/data/reasoning (real public data)")
    rows, rejects, verdicts, agreement = MINERVA_FIGURES[name]
    frame, got_rejects = ingest(MINERVA[name], MINERVA_COLUMNS, name)
    assert frame.height + sum(got_rejects.values()) == rows
    assert dict(got_rejects) == rejects
    kept, rejected, stats = assert_stage_contract(Verify(), frame)
    counts = stats.distributions["verify"]["all"]
    # One comparison (a second-order ODE against an equation of motion) needs tens of seconds in sympy: it is
    # `timeout` (kept) or `wrong` (dropped) depending on the machine's speed; the sum is fixed.
    got = {"correct": counts["correct"], "wrong_or_timeout": counts["wrong"] + counts["timeout"],
           "no_answer": counts["no_answer"]}
    assert got == verdicts
    assert stats.dropped == {"wrong_answer": counts["wrong"]}
    both = pl.concat([kept, rejected], how="diagonal")
    score = both["meta"].map_elements(lambda m: orjson.loads(m)["score"][0], return_dtype=pl.Boolean)
    pairs = Counter(zip(both["verdict"], score))
    assert {k: pairs[k] for k in agreement} == agreement


def test_verify_and_reasoning_stages_in_the_curation_engine(tmp_path):
    """The stages as a recipe's `curation:` runs them: sharded scoring, rejected rows and stats on disk."""
    from alignmix.filters.apply import curate
    from alignmix.filters.registry import build_stage

    frame = to_frame([
        trace("right", "The answer is (C).", "C"),
        trace("wrong", "The answer is (C).", "B"),
        trace("empty", "The answer is (C).", "C", reasoning=""),
        trace("cut", "The answer is (C).", "C", meta={"finish_reason": "reasoning_length"}),
    ], "sft")
    stages = [build_stage({"stage": "verify"}), build_stage({"stage": "reasoning"}), build_stage({"stage": "length"})]
    stats = curate(frame, tmp_path / "out", stages)
    assert [(s.stage, s.rows_in, s.rows_kept, s.dropped) for s in stats] == [
        ("verify", 4, 2, {"truncated_reasoning": 1, "wrong_answer": 1}),
        ("reasoning", 2, 1, {"empty_reasoning": 1}),
        ("length", 1, 1, {}),
    ]
    rejected = pl.read_parquet(tmp_path / "out" / "rejected" / "verify.parquet")
    assert by_source_id(rejected) == {"wrong": ("wrong_answer", "extracted C, expected B (choice)"),
                                      "cut": ("truncated_reasoning", "finish_reason=reasoning_length")}
    assert stats[0].distributions["verify"]["by_source"]["t"]["accuracy"] == 0.6667
    assert stats[2].distributions["reasoning_len"]["n"] == 1
