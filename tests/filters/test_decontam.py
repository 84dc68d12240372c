"""Decontamination: designed rows per match kind, eval files in JSON Lines and parquet, and a real mix
with GSM8K test questions planted in it."""

import random

import orjson
import polars as pl
import pytest

from alignmix.filters.decontam import Decontaminate
from tests.filters.rows import by_source_id, jsonl, load_ultrafeedback, pref, prefs
from tests.stage_contract import assert_stage_contract

EVAL = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May."},
    {"question": "What is 2 + 2?"},
]


@pytest.fixture()
def eval_files(tmp_path):
    jl = tmp_path / "mini_eval.jsonl"
    jl.write_bytes(b"\n".join(orjson.dumps(r) for r in EVAL))
    pq = tmp_path / "mini_eval.parquet"
    pl.DataFrame({"text": [r["question"] for r in EVAL]}).write_parquet(pq)
    return jl, pq


def test_ngram_overlap_and_normalized_equality_are_flagged(eval_files):
    jl, _ = eval_files
    frame = prefs(
        pref("ngram", "a", "b", prompt="Help me: natalia sold clips to 48 of her friends in April, and then she sold some more."),
        pref("equal", "a", "b", prompt="  what is 2 + 2? "),
        pref("twelve", "a", "b", prompt="Natalia sold clips to 48 of her friends in April, and then"),
        pref("clean", "a", "b", prompt="Write a haiku about autumn."),
    )
    kept, rejected, stats = assert_stage_contract(Decontaminate({"evals": [{"path": str(jl), "field": "question"}]}), frame)
    assert by_source_id(rejected) == {
        "ngram": ("contaminated", "mini_eval#0: 13-gram 'natalia sold clips to 48 of her friends in april and then she'"),
        "equal": ("contaminated", "mini_eval#1: equal after normalization"),
    }
    assert rejected["contam_match"].to_list() == ["mini_eval#0", "mini_eval#1"]
    assert kept["contam_match"].to_list() == [None, None]  # 12 shared words are not 13
    assert stats.distributions["contaminated_by_set"] == {"mini_eval": 2}


def test_parquet_eval_set_with_a_name_and_a_shorter_ngram(eval_files):
    _, pq = eval_files
    frame = prefs(pref(0, "a", "b", prompt="she sold half as many clips in may, right?"), pref(1, "a", "b", prompt="clips in May"))
    stage = Decontaminate({"evals": [{"path": str(pq), "field": "text", "name": "gsm"}], "ngram": 8})
    _, rejected, _ = assert_stage_contract(stage, frame)
    assert by_source_id(rejected) == {"0": ("contaminated", "gsm#0: 8-gram 'she sold half as many clips in may'")}


def test_bad_eval_files_name_the_file_row_and_field(eval_files, tmp_path):
    jl, _ = eval_files
    frame = prefs(pref(0, "a", "b"))
    with pytest.raises(ValueError, match=r"mini_eval.jsonl: row 0 has no string field 'prompt'"):
        Decontaminate({"evals": [{"path": str(jl)}]}).run(frame)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        Decontaminate({"evals": [{"path": str(tmp_path / "missing.jsonl")}]}).run(frame)


def test_a_mix_with_planted_gsm8k_questions_gets_exactly_those_flagged(shared_data):
    uf, _ = load_ultrafeedback(shared_data)
    gsm = [r["question"] for r in jsonl(shared_data / "evals" / "gsm8k_test.jsonl")]
    rng = random.Random(4)
    picked = rng.sample(range(len(gsm)), 30)
    planted = []
    for k, q in enumerate(picked):
        # Half verbatim, half wrapped in an instruction (found by a shared 13-gram).
        prompt = gsm[q] if k % 2 == 0 else f"Solve this step by step and explain.\n{gsm[q]}\nGive the final number."
        planted.append(pref(f"gsm{q}", "The answer is 42.", "I don't know.", prompt=prompt, sc=8.0, sr=2.0))
    mix = pl.concat([uf, prefs(*planted)]).sample(fraction=1.0, shuffle=True, seed=1)
    evals = [
        {"path": str(shared_data / "evals" / "gsm8k_test.jsonl"), "field": "question"},
        {"path": str(shared_data / "evals" / "ifeval_input_data.jsonl"), "field": "prompt"},
    ]
    kept, rejected, stats = assert_stage_contract(Decontaminate({"evals": evals}), mix)
    assert stats.dropped == {"contaminated": 30}
    assert dict(rejected.select("source_id", "contam_match").iter_rows()) == {f"gsm{q}": f"gsm8k_test#{q}" for q in picked}
    assert kept.height == 200
