"""Length limits, the length-bias ratio, the before/after picture and the balancing mode."""

import pytest

from alignmix.filters.length import LengthFilter, balance_mask
from tests.filters.rows import by_source_id, pref, prefs, sft, sfts
from tests.stage_contract import assert_stage_contract


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_each_limit_and_the_ratio_drop_their_row():
    frame = prefs(
        pref("ok", words(10), words(8), prompt=words(5)),
        pref("short_prompt", words(10), words(8), prompt=words(1)),
        pref("long_prompt", words(10), words(8), prompt=words(40)),
        pref("short_resp", words(10), words(2), prompt=words(5)),
        pref("long_resp", words(60), words(50), prompt=words(5)),
        pref("ratio_hi", words(25), words(10), prompt=words(5)),
        pref("ratio_lo", words(4), words(12), prompt=words(5)),
    )
    stage = LengthFilter({"min_prompt": 2, "max_prompt": 30, "min_response": 3, "max_response": 55})
    kept, rejected, stats = assert_stage_contract(stage, frame)
    assert by_source_id(rejected) == {
        "short_prompt": ("prompt_too_short", "prompt: 1 < 2"),
        "long_prompt": ("prompt_too_long", "prompt: 40 > 30"),
        "short_resp": ("response_too_short", "rejected: 2 < 3"),
        "long_resp": ("response_too_long", "chosen: 60 > 55"),
        "ratio_hi": ("length_ratio", "2.5"),
        "ratio_lo": ("length_ratio", "0.3333"),
    }
    assert kept["len_ratio"].to_list() == [1.25]
    bias = stats.distributions["length_bias"]
    assert bias["before"]["pairs"] == 7 and bias["after"]["pairs"] == 1
    assert bias["before"]["share_chosen_longer"] == pytest.approx(6 / 7, abs=1e-4)  # all but ratio_lo
    assert bias["after"]["mean_chosen_len"] == 10.0 and bias["after"]["mean_rejected_len"] == 8.0
    assert stats.distributions["len_ratio_before"]["n"] == 7


def test_ratio_exactly_at_the_threshold_is_kept_and_chars_unit():
    frame = prefs(pref(0, words(20), words(10)), pref(1, "abcdef", "abc"), pref(2, "abcdefg", "abc"))
    _, rejected, _ = assert_stage_contract(LengthFilter({"unit": "chars"}), frame)
    # 20 words "w0 .. w19" are 69 chars vs 29: 2.3793; "abcdef"/"abc" is exactly 2.0, kept.
    assert by_source_id(rejected) == {"0": ("length_ratio", "2.3793"), "2": ("length_ratio", "2.3333")}


def test_sft_rows_have_prompt_and_response_lengths():
    frame = sfts(sft(0, words(3), words(4)), sft(1, words(3), words(100)))
    kept, rejected, _ = assert_stage_contract(LengthFilter({"max_response": 50}), frame)
    assert by_source_id(rejected) == {"1": ("response_too_long", "response: 100 > 50")}
    assert kept["response_len"].to_list() == [4] and "len_ratio" not in kept.columns


def test_balance_makes_chosen_longer_in_half_the_pairs_of_each_bucket():
    rows = [pref(f"L{i}", words(12 + i % 3), words(10)) for i in range(6)]  # chosen longer: 6
    rows += [pref(f"S{i}", words(9), words(10)) for i in range(2)]  # chosen shorter: 2
    rows += [pref("E", words(10), words(10))]  # equal: never dropped
    kept, rejected, stats = assert_stage_contract(
        LengthFilter({"balance": True, "balance_buckets": 1, "max_length_ratio": None}), prefs(*rows)
    )
    assert stats.dropped == {"length_balance": 4}
    assert set(rejected["drop_detail"]) == {"bucket 0: chosen longer in 6, shorter in 2"}
    assert (kept["chosen_len"] > kept["rejected_len"]).sum() == (kept["chosen_len"] < kept["rejected_len"]).sum() == 2
    assert "E" in kept["source_id"].to_list()
    assert LengthFilter({"balance": True}).row_local is False and LengthFilter().row_local is True


def test_balance_mask_buckets_separately():
    import numpy as np

    c = np.array([2, 3, 1, 200, 210, 220, 100])
    r = np.array([1, 1, 2, 100, 100, 100, 200])
    drop, detail = balance_mask(c, r, np.ones(7, dtype=bool), buckets=2, seed=0)
    # Small bucket: 2 longer, 1 shorter -> drop 1 longer; large bucket: 3 longer, 1 shorter -> drop 2 longer.
    assert drop.sum() == 3 and not drop[2] and not drop[6]


def test_tokens_need_a_tokenizer():
    with pytest.raises(ValueError, match="tokenizer"):
        LengthFilter({"unit": "tokens"})


def test_words_split_on_any_whitespace_and_chars_count_every_character():
    frame = prefs(pref(0, "a \n\n b\tc", "d e f"))
    assert LengthFilter().run(frame).kept["chosen_len"].to_list() == [3]
    assert LengthFilter({"unit": "chars"}).run(frame).kept["chosen_len"].to_list() == [8]


@pytest.mark.slow
def test_tokens_of_the_default_model():
    from transformers import AutoTokenizer

    from alignmix.pipeline.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("default"))
    chosen, rejected = "Hello there, how are you today?", "Hi"
    frame = prefs(pref(0, chosen, rejected), pref(1, "one two", "three four"))
    kept, rejected_rows, _ = assert_stage_contract(LengthFilter({"unit": "tokens", "tokenizer": "default"}), frame)
    n_chosen = len(tok(chosen, add_special_tokens=False)["input_ids"])
    n_rejected = len(tok(rejected, add_special_tokens=False)["input_ids"])
    assert n_chosen / n_rejected > 2.0
    assert by_source_id(rejected_rows) == {"0": ("length_ratio", str(round(n_chosen / n_rejected, 4)))}
    assert kept["chosen_len"].to_list() == [len(tok("one two", add_special_tokens=False)["input_ids"])]
