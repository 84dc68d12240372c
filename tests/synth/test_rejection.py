"""Rejection sampling: correct traces kept for SFT, correct-vs-wrong traces of one problem paired, on designed
samples and on two real reasoning models' outputs for the same Minerva-Math questions."""

from __future__ import annotations

from collections import Counter

import orjson
import polars as pl
import pytest

from alignmix.filters.verify import Verify
from alignmix.pipeline.schema import sft_row, to_arrow, to_frame
from alignmix.synth.rejection import problem_key, rejection_sample
from tests.filters.rows import jsonl
from tests.filters.test_verify import MINERVA, MINERVA_COLUMNS, ingest
from tests.stage_contract import assert_stage_contract


def sample(problem: str, k: int, words: int, answer: str, truth: str = "42", finish: str = "stop") -> dict:
    reasoning = " ".join(["step"] * (words - len(answer.split())))
    turn = {"role": "assistant", "content": answer, "reasoning_content": reasoning}
    meta = {"ground_truth": truth, "finish_reason": finish, "sample": k}
    return sft_row([{"role": "user", "content": f"Solve problem {problem}."}, turn], source="gen",
                   source_id=f"{problem}-{k}", meta=meta)


SAMPLES = [
    sample("p1", 0, 120, "So \\boxed{42}."),
    sample("p1", 1, 300, "Hence \\boxed{42}."),
    sample("p1", 2, 90, "So \\boxed{41}."),
    sample("p1", 3, 400, "So \\boxed{24}."),
    sample("p2", 0, 50, "\\boxed{42}"),
    sample("p2", 1, 60, "It is \\boxed{42}"),
    sample("p3", 0, 50, "\\boxed{7}"),
    sample("p4", 0, 80, "\\boxed{42}"),
    sample("p4", 1, 500, "\\boxed{1}", finish="reasoning_length"),
]


def picked(result, problem: str) -> list[tuple[str, str]]:
    """(chosen sample, rejected sample) of each pair of `problem`, by source_id."""
    out = []
    for meta in result.pairs["meta"].to_list():
        r = orjson.loads(meta)["rejection"]
        if r["chosen"]["source_id"].startswith(problem):
            out.append((r["chosen"]["source_id"], r["rejected"]["source_id"]))
    return out


def test_correct_traces_are_kept_and_the_shortest_correct_meets_the_closest_wrong():
    result = rejection_sample(to_frame(SAMPLES, "sft"))
    assert result.stats == {
        "samples": 9, "problems": 4,
        "verdicts": {"correct": 5, "truncated": 1, "wrong": 3},
        "problems_by_outcome": {"all_correct": 2, "all_wrong": 1, "mixed": 1, "no_verdict": 0},
        "sft_rows": 5, "pairs": 1,
    }
    assert sorted(result.sft["source_id"]) == ["p1-0", "p1-1", "p2-0", "p2-1", "p4-0"]
    verdicts = dict(zip(result.samples["source_id"], result.samples["verdict"]))
    assert (verdicts["p1-3"], verdicts["p4-1"], result.samples.height) == ("wrong", "truncated", 9)
    assert result.sft.columns == ["messages", "id", "source", "source_id", "meta"]
    assert orjson.loads(result.sft.filter(pl.col("source_id") == "p1-0")["meta"].item())["rejection"] == {
        "problem": problem_key(SAMPLES[0]["messages"]), "samples": 4, "correct": 2, "verdict": "correct"}
    assert picked(result, "p1") == [("p1-0", "p1-2")]  # 120 words against 90 (not 400)
    meta = orjson.loads(result.pairs["meta"].item())
    assert meta["ground_truth"] == "42" and meta["rejection"]["rule"] == "shortest correct vs closest wrong"
    assert meta["rejection"]["chosen"] | {"id": None} == {
        "id": None, "source": "gen", "source_id": "p1-0", "words": 120, "verdict": "correct", "extracted": "42"}
    assert meta["rejection"]["rejected"]["extracted"] == "41" and meta["rejection"]["rejected"]["words"] == 90
    pair = result.pairs.row(0, named=True)
    assert (pair["score_chosen"], pair["score_rejected"], pair["source"]) == (1.0, 0.0, "rejection_pairs")
    assert pair["chosen"][-1]["reasoning_content"] == SAMPLES[0]["messages"][-1]["reasoning_content"]
    assert pair["prompt"] == "Solve problem p1."


def test_pairing_rules_are_configurable():
    frame = to_frame(SAMPLES, "sft")
    assert picked(rejection_sample(frame, {"rejected": "longest"}), "p1") == [("p1-0", "p1-3")]
    assert picked(rejection_sample(frame, {"chosen": "longest"}), "p1") == [("p1-1", "p1-3")]  # 300: 400 is closer
    assert picked(rejection_sample(frame, {"pairs_per_problem": 2}), "p1") == [("p1-0", "p1-2"), ("p1-1", "p1-3")]
    # a cut trace is a rejected candidate only when asked for
    assert picked(rejection_sample(frame, {"rejected_verdicts": ["wrong", "truncated"]}), "p4") == [("p4-0", "p4-1")]
    assert sorted(rejection_sample(frame, {"keep": "shortest"}).sft["source_id"]) == ["p1-0", "p2-0", "p4-0"]
    drawn = {tuple(picked(rejection_sample(frame, {"rejected": "random", "seed": s}), "p1")[0]) for s in range(8)}
    assert drawn == {("p1-0", "p1-2"), ("p1-0", "p1-3")}


def test_same_samples_in_any_order_give_the_same_rows():
    a = rejection_sample(to_frame(SAMPLES, "sft"), {"rejected": "random"})
    b = rejection_sample(to_frame(SAMPLES[::-1], "sft"), {"rejected": "random"})
    assert a.pairs.equals(b.pairs) and a.sft.equals(b.sft)


def test_pairs_pass_the_verify_stage_and_load_in_datasets(tmp_path):
    import datasets
    import pyarrow.parquet as pq

    pairs = rejection_sample(to_frame(SAMPLES, "sft"), {"pairs_per_problem": 2}).pairs
    kept, rejected, _ = assert_stage_contract(Verify(), pairs)
    assert (kept.height, rejected.height) == (2, 0)
    assert set(zip(kept["verdict_chosen"], kept["verdict_rejected"])) == {("correct", "wrong")}
    pq.write_table(to_arrow(pairs), tmp_path / "pairs.parquet")
    loaded = datasets.load_dataset("parquet", data_files=str(tmp_path / "pairs.parquet"), split="train")
    assert loaded.num_rows == 2 and loaded[0]["chosen"][-1]["reasoning_content"].startswith("step")


@pytest.mark.slow
def test_minerva_correct_vs_wrong_pairs_from_two_models():
    """The same 272 Minerva-Math questions answered by two Sky-T1 models, ingested through the column mapping and
    paired. The file's own grader (its `score`, Qwen2.5-Math's) calls 46 questions right for one model and wrong
    for the other; we pair 30. Of the 46, 15 lose a side at ingest (a trace cut inside its reasoning or its
    solution block: 6 of model a, 8 of model b, 1 both), and of the 31 left math-verify splits 18 (it calls both
    answers right or both wrong in 13); 12 more pairs come from questions that grader did not split, where its
    answer extraction failed (it read "3" from "x(t) = \\frac{e^t}{3}")."""
    for path in MINERVA.values():
        if not path.exists():
            pytest.skip("needs ../shared/data/reasoning (real public data)")
    frames = [ingest(MINERVA[name], MINERVA_COLUMNS, name)[0] for name in ("a", "b")]
    result = rejection_sample(pl.concat(frames))
    stats = result.stats
    assert (stats["samples"], stats["problems"]) == (391, 240)
    assert stats["problems_by_outcome"]["mixed"] == 30 and stats["pairs"] == 30
    assert stats["sft_rows"] == 162
    # the file's grader's 46 split questions, and how many keep both sides through ingest
    scores = {name: [r["score"][0] for r in jsonl(MINERVA[name])] for name in ("a", "b")}
    split = {i for i, (a, b) in enumerate(zip(scores["a"], scores["b"])) if a != b}
    assert len(split) == 46
    parsed = [set(f["source_id"].cast(int).to_list()) for f in frames]
    both_parsed = split & parsed[0] & parsed[1]
    assert len(both_parsed) == 31
    # every pair is one question, the two models on either side, a correct answer against a wrong one
    sides = [orjson.loads(m)["rejection"] for m in result.pairs["meta"].to_list()]
    assert all(s["chosen"]["source_id"] == s["rejected"]["source_id"] for s in sides)
    assert Counter(s["chosen"]["source"] for s in sides) == {"a": 18, "b": 12}
    paired = {int(s["chosen"]["source_id"]) for s in sides}
    assert (len(paired & both_parsed), len(paired - split)) == (18, 12)
    lost = Counter(("a" if i not in parsed[0] else "") + ("b" if i not in parsed[1] else "") for i in split - both_parsed)
    assert lost == {"a": 6, "b": 8, "ab": 1}
