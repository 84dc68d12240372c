"""The pairwise verdict record: what a pairwise judge writes into a preference row's `meta`, and what the
consistency filter reads back. One format, defined here, so the two can never drift apart.

A pair is judged twice, once with the chosen response shown first and once with the rejected one first.
Each judgement is one verdict; `winner` names the *response* the judge preferred (chosen, rejected, or null
when its answer could not be read), never its position:

    >>> record = pairwise_record([verdict("chosen", "A", "A"), verdict("rejected", "A", "A is better")])
    >>> record["verdicts"][1]
    {'answer': 'A', 'first': 'rejected', 'raw': 'A is better', 'winner': 'rejected'}
    >>> record["consistent"], record["agrees"]
    (False, None)
    >>> position_verdicts({"pairwise": record})
    ('chosen', 'rejected')

`consistent` is true when the same response wins in both orders (null when either answer is unreadable);
`agrees` is true when that response is the chosen one. Rows from outside alignmix may carry the bare list of
verdicts (`"pairwise": [{"first": ..., "winner": ...}, ...]`); `position_verdicts` reads both.
"""

from __future__ import annotations

from typing import Any, Literal

Side = Literal["chosen", "rejected"]
LETTERS = ("A", "B")


def verdict(first: Side, answer: str | None, raw: str) -> dict[str, Any]:
    """One judgement: the judge saw `first` as answer A and replied `answer` ("A", "B" or None if unreadable)."""
    if first not in ("chosen", "rejected"):
        raise ValueError(f"first must be 'chosen' or 'rejected', got {first!r}")
    second = "rejected" if first == "chosen" else "chosen"
    winner = {"A": first, "B": second}.get(answer or "")
    return {"answer": answer, "first": first, "raw": raw, "winner": winner}


def pairwise_record(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    """The `meta.pairwise` value for a pair judged in both orders."""
    winners = position_verdicts({"pairwise": verdicts})
    consistent = None if winners is None else winners[0] == winners[1]
    return {
        "verdicts": verdicts,
        "consistent": consistent,
        "agrees": (winners[0] == "chosen") if consistent else None,
    }


def position_verdicts(meta: dict[str, Any]) -> tuple[str, str] | None:
    """(winner with chosen shown first, winner with rejected shown first), or None unless both are readable."""
    record = meta.get("pairwise")
    verdicts = record.get("verdicts") if isinstance(record, dict) else record
    by_order: dict[str, str] = {}
    for v in verdicts if isinstance(verdicts, list) else []:
        if isinstance(v, dict) and v.get("first") in ("chosen", "rejected") and v.get("winner"):
            by_order.setdefault(v["first"], str(v["winner"]))
    if len(by_order) < 2:
        return None
    return by_order["chosen"], by_order["rejected"]


def finish_reasons(chosen_meta: dict[str, Any], rejected_meta: dict[str, Any]) -> dict[str, Any]:
    """The `meta.finish_reason` value of a generated pair: each side's generator finish reason ("stop",
    "length", ...; null when unknown). The consistency filter drops a pair where either side is "length"."""
    return {"chosen": chosen_meta.get("finish_reason"), "rejected": rejected_meta.get("finish_reason")}
