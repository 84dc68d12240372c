"""The arithmetic word-problem generator: distinct problems, right answers, reproducible, as prompt rows."""

from __future__ import annotations

import re

import orjson
import pytest

from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.store import MixStore
from alignmix.synth import run_generator
from alignmix.synth.arithmetic_problems import ArithmeticProblemsConfig, make_problems


def _value(expression: str) -> int:
    """The expression's value, computed here left to right (reference for the generator's answer)."""
    tokens = expression.split()
    value = int(tokens[0])
    for op, n in zip(tokens[1::2], map(int, tokens[2::2])):
        if op == "/":
            assert value % n == 0, "sharing must divide evenly"
        value = {"+": value + n, "-": value - n, "*": value * n, "/": value // max(n, 1)}[op]
    return value


def test_answers_match_the_numbers_in_the_question():
    problems = make_problems(ArithmeticProblemsConfig(count=200, seed=1, max_operand=20))
    assert len({p.question for p in problems}) == 200
    assert {p.operation for p in problems} == {"add", "subtract", "add_subtract", "multiply", "share"}
    for p in problems:
        assert p.answer == _value(p.expression) and p.answer >= 0
        numbers = [int(x) for x in re.findall(r"\d+", p.question)]
        operands = [int(x) for x in re.findall(r"\d+", p.expression)]
        assert sorted(numbers) == sorted(operands), p  # the question states exactly the expression's numbers


def test_same_seed_same_problems_other_seed_others():
    a = make_problems(ArithmeticProblemsConfig(count=10, seed=7))
    assert a == make_problems(ArithmeticProblemsConfig(count=10, seed=7))
    assert a != make_problems(ArithmeticProblemsConfig(count=10, seed=8))


def test_too_many_problems_for_the_settings_is_an_error():
    # add with operands 1..2: only 2 x 2 x 14 names x 10 items questions exist
    with pytest.raises(ValueError, match="only 560 distinct problems"):
        make_problems(ArithmeticProblemsConfig(count=600, max_operand=2, operations=["add"]))


def test_generator_writes_prompt_rows_with_ground_truth(tmp_path):
    stats = run_generator({"kind": "arithmetic_problems", "name": "arith", "count": 5, "seed": 3}, tmp_path)
    assert (stats["rows_in"], stats["rows_kept"], stats["dropped"]) == (5, 5, {})
    frame = MixStore(tmp_path).read()
    assert row_kind(frame) == "prompt" and frame.height == 5
    expected = make_problems(ArithmeticProblemsConfig(count=5, seed=3))
    for row, p in zip(frame.iter_rows(named=True), expected):
        meta = orjson.loads(row["meta"])
        assert row["messages"][-1]["content"] == p.question
        assert (meta["ground_truth"], meta["expression"]) == (str(p.answer), p.expression)
