"""Binarization on designed prompt groups: one group built to trip each rule, both rejected-selection modes."""

from __future__ import annotations

import random

import orjson
import polars as pl
import pytest

from alignmix.pipeline.schema import POLARS_SCHEMAS, content_id
from alignmix.synth.binarize import GROUP_SCHEMA, Binarizer, choose_pair, prompt_groups, to_preference_rows
from tests.stage_contract import assert_stage_contract

ASPECTS = ["helpfulness", "honesty", "instruction_following", "truthfulness"]


def _meta(pid: str, index: int, ratings: list[int | None]) -> str:
    per = dict(zip(ASPECTS, ratings))
    rating = None if None in ratings else sum(ratings) / len(ratings)  # type: ignore[operator]
    judge = {"backend": "transformers", "model": "judge-model", "aspects": ASPECTS, "ratings": per,
             "rationales": {a: f"why {a}" for a in ASPECTS}, "raw": {a: f"Rating: {per[a]}" for a in ASPECTS},
             "rating": rating, "parsed": rating is not None}  # fmt: skip
    finish = "length" if index == 3 else "stop"  # the generator's finish reason, as responses record it
    return orjson.dumps({"prompt_id": pid, "response_index": index, "responder": f"r{index}", "judge": judge,
                         "finish_reason": finish}).decode()  # fmt: skip


def _rated_rows(groups: dict[str, list[list[int | None]]]) -> pl.DataFrame:
    rows = []
    for prompt, responses in groups.items():
        pid = content_id({"messages": [{"role": "user", "content": prompt}]})
        # stored out of order on purpose: prompt_groups must order responses by response_index
        for i in reversed(range(len(responses))):
            msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": f"answer {i} to {prompt}"}]
            rows.append({"messages": msgs, "id": content_id({"messages": msgs}), "source": "t", "source_id": f"{pid}-{i}",
                         "meta": _meta(pid, i, responses[i])})  # fmt: skip
    return pl.DataFrame(rows, schema=POLARS_SCHEMAS["sft"])


DESIGNED = {
    "clear winner": [[5, 5, 5, 5], [2, 2, 2, 2], [3, 3, 3, 3], [1, 1, 1, 1]],
    "all tied": [[4, 4, 4, 4], [4, 4, 4, 4], [4, 5, 3, 4]],  # means: 4, 4, 4
    "unparseable": [[5, 5, 5, 5], [None, 3, 3, 3], [None, None, None, None]],
    "single": [[3, 3, 3, 3]],
    "null but pair": [[None, 1, 1, 1], [2, 2, 2, 2], [4, 4, 4, 4]],
}


def test_choose_pair_rules():
    rng = random.Random(0)
    assert choose_pair([1.0, 3.0, 3.0, 2.0], "lowest", rng) == (1, 0)  # first of the tied best is chosen
    assert choose_pair([2.0, 2.0], "lowest", rng) == ("score_tie", "all 2 rated responses scored 2.0")
    assert choose_pair([2.0, None], "random", rng) == ("judge_unparseable", "1 of 2 responses rated (1 unparseable)")
    assert choose_pair([2.0], "random", rng) == ("too_few_responses", "1 response(s)")
    assert choose_pair([None, 4.0, 1.0], "lowest", rng) == (1, 2)


@pytest.mark.parametrize("mode", ["lowest", "random"])
def test_binarizer_stage_contract_and_reasons(mode):
    groups = prompt_groups(_rated_rows(DESIGNED))
    assert groups.height == 5
    assert [r["text"] for r in groups.row(0, named=True)["responses"]] == [f"answer {i} to clear winner" for i in range(4)]
    kept, rejected, stats = assert_stage_contract(Binarizer({"rejected": mode, "seed": 3}), groups)
    assert stats.dropped == {"judge_unparseable": 1, "score_tie": 1, "too_few_responses": 1}
    reasons = dict(zip(rejected["prompt"].to_list(), rejected["drop_reason"].to_list()))
    assert reasons == {"all tied": "score_tie", "unparseable": "judge_unparseable", "single": "too_few_responses"}
    picks = {p: (c, r) for p, c, r in kept.select("prompt", "chosen_index", "rejected_index").iter_rows()}
    assert picks["null but pair"] == (2, 1)  # the unrated response takes no part
    assert picks["clear winner"][0] == 0
    if mode == "lowest":
        assert picks["clear winner"] == (0, 3)
    else:
        assert picks["clear winner"][1] in (1, 2, 3)


def test_random_mode_is_seeded_and_not_always_the_lowest():
    many = {f"prompt {k}": [[5, 5, 5, 5], [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3]] for k in range(24)}
    groups = prompt_groups(_rated_rows(many))
    first = Binarizer({"rejected": "random", "seed": 11}).run(groups).kept["rejected_index"].to_list()
    again = Binarizer({"rejected": "random", "seed": 11}).run(groups.reverse()).kept.sort("prompt")
    assert set(first) <= {1, 2, 3} and len(set(first)) > 1
    # per-prompt seeding: the choice does not depend on the order of the prompts
    assert dict(zip(groups["prompt"], first)) == dict(zip(again["prompt"], again["rejected_index"]))
    lowest = Binarizer({"rejected": "lowest"}).run(groups).kept["rejected_index"].to_list()
    assert lowest == [1] * 24


def test_preference_rows_carry_scores_and_the_judges_record():
    groups = prompt_groups(_rated_rows(DESIGNED))
    kept = Binarizer({"rejected": "lowest"}).run(groups).kept
    pairs, errors = to_preference_rows(kept, "prefs", "lowest")
    assert errors == []
    assert pairs.schema == pl.Schema(POLARS_SCHEMAS["preference"])
    row = pairs.filter(pl.col("prompt") == "clear winner").row(0, named=True)
    assert (row["score_chosen"], row["score_rejected"]) == (5.0, 1.0)
    assert [(m["role"], m["content"], m["reasoning_content"]) for m in row["chosen"]] == [
        ("user", "clear winner", None), ("assistant", "answer 0 to clear winner", None)]
    assert row["rejected"][-1]["content"] == "answer 3 to clear winner"
    meta = orjson.loads(row["meta"])
    assert meta["judge"] == {"backend": "transformers", "model": "judge-model", "aspects": ASPECTS}
    assert meta["chosen"]["ratings"] == dict.fromkeys(ASPECTS, 5)
    assert meta["rejected"]["rationales"]["honesty"] == "why honesty"
    assert meta["chosen"]["raw"]["truthfulness"] == "Rating: 5"
    assert [s["rating"] for s in meta["all_scores"]] == [5.0, 2.0, 3.0, 1.0]
    # both sides' finish reasons travel with the pair, where the consistency filter reads them
    assert meta["finish_reason"] == {"chosen": "stop", "rejected": "length"}
    assert (meta["chosen"]["finish_reason"], meta["rejected"]["finish_reason"]) == ("stop", "length")
    nulls = orjson.loads(pairs.filter(pl.col("prompt") == "null but pair")["meta"][0])
    assert [s["rating"] for s in nulls["all_scores"]] == [None, 2.0, 4.0]


def test_empty_input():
    kept, rejected, stats = Binarizer().run(pl.DataFrame(schema=GROUP_SCHEMA))
    assert (kept.height, rejected.height, stats.rows_in) == (0, 0, 0)
