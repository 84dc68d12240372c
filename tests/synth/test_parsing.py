"""Parsing of model output: judge ratings, Self-Instruct task lists and instances, seed files and filters."""

from __future__ import annotations

import pytest

from alignmix.synth.config import SelfInstructConfig
from alignmix.synth.judge import Judgement, parse_aspect
from alignmix.synth.self_instruct import filter_reason, load_seed_tasks, parse_instance, parse_task_list


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Rating: 4\nRationale: Accurate and complete.", (4, "Accurate and complete.")),
        ("Rating: **2**/5\n**Rationale:** Misses the question.", (2, "Misses the question.")),
        ("rating:5", (5, None)),
        ("Rating: 1. It is wrong.", (1, None)),
        ("Rating: 7\nRationale: off scale", (None, None)),
        ("Rating: 45", (None, None)),
        ("The answer is good.", (None, None)),
        ("", (None, None)),
    ],
)
def test_parse_aspect(text, expected):
    assert parse_aspect(text) == expected


def test_judgement_rating_is_null_unless_every_aspect_parsed():
    full = Judgement({"helpfulness": 4, "honesty": 3}, {"helpfulness": None, "honesty": "x"}, {"helpfulness": "r", "honesty": "r"})
    assert (full.rating, full.parsed) == (3.5, True)
    partial = Judgement({"helpfulness": 4, "honesty": None}, {}, {"helpfulness": "Rating: 4", "honesty": "no idea"})
    assert (partial.rating, partial.parsed) == (None, False)
    assert partial.to_dict()["raw"] == {"helpfulness": "Rating: 4", "honesty": "no idea"}


def test_parse_task_list_marks_only_the_cut_task():
    text = " Name a fruit.\nTask 10: 11. list three  colors\n\nTask 11: Describe"
    assert parse_task_list(text, 9, truncated=True) == [
        ("Name a fruit.", False), ("List three colors", False), ("Describe", True),
    ]
    assert parse_task_list(text, 9, truncated=False)[-1] == ("Describe", False)
    assert parse_task_list("", 9, truncated=False) == [("", False)]


@pytest.mark.parametrize(
    "instruction, reason",
    [
        ("", "empty_instruction"),
        ("Summarize this", "instruction_length"),
        ("Describe the picture in a few words.", "keyword_filtered"),
        ("Plot the data as a bar chart please", "keyword_filtered"),
        ("Write a program that sorts a list.", "keyword_filtered"),
        ("\"Quote\" the most famous line of Hamlet.", "bad_start"),
        ("Émettez une liste de trois fruits rouges.", "bad_start"),
        ("Give three tips for learning a language.", None),
        ("Describe the mapping between keys and values.", None),  # 'map' only as a whole word
    ],
)
def test_self_instruct_filters(instruction, reason):
    got = filter_reason(instruction, SelfInstructConfig())
    assert (got[0] if got else None) == reason


def test_too_long_instruction():
    assert filter_reason(" ".join(["word"] * 151), SelfInstructConfig()) == ("instruction_length", "151 words (keep 4..150)")


def test_parse_instance_both_orders():
    assert parse_instance(" None\nOutput: Paris", False, False) == ("", "Paris", None)
    assert parse_instance(" 2 + 2\nOutput: 4", False, False) == ("2 + 2", "4", None)
    assert parse_instance(" positive\nInput: I loved it.", True, False) == ("I loved it.", "positive", None)
    assert parse_instance(" positive", True, False)[2][0] == "instance_unparseable"
    assert parse_instance(" x\nOutput:", False, False)[2] == ("empty_output", "the instance has no output")
    assert parse_instance(" positive\nInput: None", True, False)[2][0] == "empty_input"
    assert parse_instance("anything", False, True)[2][0] == "truncated_instance"


def test_our_seed_set_and_the_reference_seed_file(shared_data, tmp_path):
    ours = load_seed_tasks()
    assert len(ours) >= 40
    assert sum(t.is_classification for t in ours) >= 10
    assert len({t.instruction for t in ours}) == len(ours)
    assert all(t.instances and t.instances[0][1] for t in ours)
    reference = load_seed_tasks(shared_data / "self_instruct" / "seed_tasks.jsonl")
    assert (len(reference), sum(t.is_classification for t in reference)) == (175, 26)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "x", "instances": [], "is_classification": false}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'instances' is empty"):
        load_seed_tasks(bad)
    bad.write_text('{"instruction": "x", "instances": [{"input": "", "output": "y"}]}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: field 'is_classification' must be a bool"):
        load_seed_tasks(bad)
