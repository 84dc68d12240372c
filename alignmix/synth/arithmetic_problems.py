"""Arithmetic word problems with known answers, drawn from a seed: prompts that `verify` can check, for
reasoning recipes that must run offline (rejection sampling needs problems whose answer is known).

    >>> problems = make_problems(ArithmeticProblemsConfig(count=2, seed=3))
    >>> [(p.question, p.answer) for p in problems]                                     # doctest: +SKIP
    [('Ava has 7 marbles and finds 5 more. How many marbles does Ava have now?', 12), ...]

Each problem is one of a few templates (add, subtract, add then take away, multiply, share equally), with
operands up to `max_operand`; subtraction never goes below zero and sharing always divides evenly, so every
answer is a whole number. The same seed gives the same problems; no two problems have the same text. Written
as prompt rows whose `meta.ground_truth` is the answer (a string, as `verify` reads it), with the expression.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.schema import prompt_row, to_frame
from alignmix.pipeline.store import fingerprint
from alignmix.synth.batches import BatchStore, Timer, rejected_frame

STAGE = "arithmetic_problems"
VERSION = "arithmetic-problems-v1"

Operation = Literal["add", "subtract", "add_subtract", "multiply", "share"]
NAMES = ("Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kofi", "Lena", "Mateo", "Nia")
ITEMS = ("apples", "marbles", "pencils", "stickers", "books", "shells", "coins", "cookies", "stamps", "cards")


class ArithmeticProblemsConfig(StrictModel):
    kind: Literal["arithmetic_problems"] = "arithmetic_problems"
    name: str = Field("arithmetic", description="the source name recorded in each row")
    count: int = Field(32, gt=0, description="how many distinct problems")
    seed: int = 0
    max_operand: int = Field(12, ge=2, le=10_000, description="the largest number in a problem")
    operations: list[Operation] = Field(
        default_factory=lambda: ["add", "subtract", "add_subtract", "multiply", "share"], min_length=1,
        description="the problem templates drawn from, with equal weight",
    )


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int
    expression: str
    operation: str


def _add(r: random.Random, n: int, who: str, item: str) -> Problem:
    a, b = r.randint(1, n), r.randint(1, n)
    return Problem(f"{who} has {a} {item} and finds {b} more. How many {item} does {who} have now?", a + b,
                   f"{a} + {b}", "add")


def _subtract(r: random.Random, n: int, who: str, item: str) -> Problem:
    a = r.randint(2, n)
    b = r.randint(1, a)
    return Problem(f"{who} has {a} {item} and gives {b} of them to a friend. How many {item} does {who} have left?",
                   a - b, f"{a} - {b}", "subtract")


def _add_subtract(r: random.Random, n: int, who: str, item: str) -> Problem:
    a, b = r.randint(1, n), r.randint(1, n)
    c = r.randint(1, a + b)
    return Problem(f"A box holds {a} {item}. {who} puts in {b} more and then takes out {c}. How many {item} are in "
                   "the box now?", a + b - c, f"{a} + {b} - {c}", "add_subtract")


def _multiply(r: random.Random, n: int, who: str, item: str) -> Problem:
    a, b = r.randint(2, n), r.randint(2, n)
    return Problem(f"{who} buys {a} bags with {b} {item} in each bag. How many {item} does {who} buy in all?", a * b,
                   f"{a} * {b}", "multiply")


def _share(r: random.Random, n: int, who: str, item: str) -> Problem:
    each, friends = r.randint(1, n), r.randint(2, n)
    return Problem(f"{who} shares {each * friends} {item} equally among {friends} friends. How many {item} does each "
                   "friend get?", each, f"{each * friends} / {friends}", "share")


TEMPLATES: dict[str, Callable[[random.Random, int, str, str], Problem]] = {
    "add": _add, "subtract": _subtract, "add_subtract": _add_subtract, "multiply": _multiply, "share": _share,
}


def make_problems(cfg: ArithmeticProblemsConfig) -> list[Problem]:
    """`cfg.count` distinct problems from `cfg.seed`; raises when the settings cannot give that many."""
    r = random.Random(cfg.seed)
    seen: dict[str, Problem] = {}
    tries = 0
    while len(seen) < cfg.count:
        tries += 1
        if tries > 50 * cfg.count:
            raise ValueError(
                f"only {len(seen)} distinct problems in {tries - 1} draws with max_operand {cfg.max_operand} and "
                f"operations {cfg.operations}: raise max_operand, add operations, or ask for fewer than {cfg.count}"
            )
        op = r.choice(cfg.operations)
        p = TEMPLATES[op](r, cfg.max_operand, r.choice(NAMES), r.choice(ITEMS))
        seen.setdefault(p.question, p)
    return list(seen.values())


def run_arithmetic_problems(spec: dict[str, Any] | ArithmeticProblemsConfig, out_dir: str | Path, **_: Any) -> dict[str, Any]:
    """Write the problems into `out_dir` as prompt rows (data/, stats/arithmetic_problems.json); a finished run
    with the same config returns its stats at once."""
    cfg = spec if isinstance(spec, ArithmeticProblemsConfig) else ArithmeticProblemsConfig.model_validate(spec)
    fp = fingerprint(VERSION, cfg.model_dump(mode="json"))
    batches = BatchStore(out_dir, STAGE, fp)
    if batches.store.is_done(STAGE, fp):
        return batches.store.read_stats(STAGE)
    timer = Timer()
    rows = [
        prompt_row([{"role": "user", "content": p.question}], source=cfg.name, source_id=f"{i:05d}",
                   meta={"generator": STAGE, "ground_truth": str(p.answer), "expression": p.expression,
                         "operation": p.operation, "run_seed": cfg.seed})
        for i, p in enumerate(make_problems(cfg))
    ]  # fmt: skip
    batches.write(0, to_frame(rows, "prompt"), rejected_frame([]), {"seconds": timer.seconds(), "requests": 0})
    return batches.finish("prompt", {"generator": STAGE, "name": cfg.name, "config": cfg.model_dump(mode="json")})
