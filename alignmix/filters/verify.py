"""Verification: a final answer checked against the row's ground truth (`meta.ground_truth`, where the ingest
column mapping puts it). Only the answer is read, never the reasoning (`reasoning_content`, or an inline block).

Three checkers, chosen per row by the ground truth (`answer: auto`) or fixed by the config:

    choice   a multiple-choice letter: "The answer is (C).", "**Answer: C**", "Answer: $\\boxed{C}$", a lone "(C)"
    math     math-verify (huggingface/Math-Verify): the answer's \\boxed{} (else its last LaTeX or plain expression)
             parsed to sympy and compared with the truth: 0.5 = \\frac{1}{2}, 15,000 = 15000, x = \\cosh(at) = cosh(a t)
    exact    the boxed or "answer is"/"Answer:" part (else the last line), compared after normalization

    >>> check_answer("Thus 3/6 of the cake is left: $\\\\boxed{\\\\frac{1}{2}}$", "0.5")
    Verdict(status='correct', extracted='\\\\frac{1}{2}', expected='0.5', method='math')
    >>> check_answer("**Answer: C**", "(B)")
    Verdict(status='wrong', extracted='C', expected='B', method='choice')

A row's verdict, and what the stage does with it (rules in this order; a row carries the first it breaks):

    truncated            the trace was cut inside its reasoning (`meta.finish_reason: reasoning_length`, or an
                         inline block never closed): reason `truncated_reasoning`, "finish_reason=reasoning_length"
    malformed            inline reasoning that does not parse: reason `malformed_reasoning`, the parser's detail
    wrong                reason `wrong_answer`, detail "extracted 3, expected 1.6 (math)"
    correct              kept
    no_truth, no_answer  uncheckable (no ground truth, or nothing to extract): kept and counted (drop_uncheckable
    timeout              drops them as `unverifiable`); timeout: math-verify gave up (the `timeout_seconds` alarm)

Preference rows are checked on `chosen`, and with `pairs: both` (the default) also on `rejected`: a reasoning
pair is correct against wrong, so a pair whose rejected answer checks out is dropped as `rejected_correct`.
The verdicts go into `verdict` (SFT; `verdict_chosen` / `verdict_rejected` for pairs) and the extracted answers
into `extracted_answer` (`extracted_chosen` / `extracted_rejected`); `stats.distributions["verify"]` counts the
verdicts per source, with the accuracy correct / (correct + wrong).

Measured on real files (public DeepSeek-R1 traces of MMLU-Pro questions, luckyIITR/r1-distill; Sky-T1 outputs on
Minerva-Math, NovaSky-AI/SkyThought): all 413 R1 answers yield the letter the file's own checker recorded, and all
413 are right (the file keeps only matched traces). Of the two Sky-T1 models' 272 outputs each, 215 and 176 parse
(the rest are cut inside their reasoning or solution); math-verify calls 86 and 76 of them right, and agrees with
the file's own grader (Qwen2.5-Math's) on 189 of 215 and 149 of 176. Where they differ it is mostly that grader's
extraction failing (it read "3" from "x(t) = \\frac{e^t}{3}", 40 rows it calls wrong), and a few rounded or
partial answers it accepts ("6630.65" for 6630, "E_1" for "E_1, E_2": 11 rows).

A ground truth that is a JSON list of strings (the column mapping writes a list of answers so, `["12", "twelve"]`)
accepts any of its answers.

`timeout_seconds` bounds each math check, from any thread: math-verify runs in a child process (one per calling
thread, `alignmix.filters.isolated`), where its own SIGALRM timer works, and a child still busy after 3x the
limit plus 2 s is killed (sympy raising 9^(9^(9^9)) holds the GIL, so no timer in the caller could stop it).
Either way the row is a `timeout`. `timeout_seconds: null` checks in this process, without a limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson
import polars as pl
from pydantic import Field

from alignmix.filters.isolated import Isolated
from alignmix.pipeline.reasoning import answer_of
from alignmix.pipeline.schema import RowError, normalize_text, row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, keep_all

Checker = Literal["auto", "math", "choice", "exact"]
STATUSES = ("correct", "wrong", "no_answer", "no_truth", "timeout", "truncated", "malformed")
UNCHECKABLE = ("no_answer", "no_truth", "timeout")


@dataclass(frozen=True)
class Verdict:
    status: str  # one of STATUSES
    extracted: str | None = None
    expected: str | None = None
    method: str | None = None
    note: str | None = None  # why a trace could not be checked (truncated, malformed)

    def detail(self) -> str:
        return self.note or f"extracted {self.extracted}, expected {self.expected} ({self.method})"


# --- multiple choice -------------------------------------------------------------------------------------------

# Markup that wraps a letter: **C**, $C$, \boxed{C}, \text{C}, \textbf{(C)}.
_WRAPPERS = re.compile(r"\\(?:boxed|text|textbf|mathrm)\s*\{([^{}]*)\}|\*\*|__|\$")


def extract_choice(text: str, letters: str = "ABCDEFGHIJ") -> str | None:
    """The letter a multiple-choice answer settles on: the last "answer is X" / "Answer: X" (in any markup), else
    an answer that is a letter alone ("C", "(C).") or whose last line opens with one ("(C) 15 m/s").

    >>> extract_choice("A and B are wrong, so the answer is (C).")
    'C'
    >>> extract_choice("**Final Answer:** \\\\boxed{D}"), extract_choice("(B) 42 m/s"), extract_choice("I think so")
    ('D', 'B', None)
    """
    plain = _WRAPPERS.sub(lambda m: m.group(1) or "", text)
    letter = f"[{re.escape(letters)}]"
    said = re.findall(rf"(?i:answer)\s*(?:(?i:is)|:|=)?\s*:?\s*(?:(?i:option|choice)\s*)?\(?({letter})\)?(?![\w])", plain)
    if said:
        return said[-1]
    lines = [ln.strip() for ln in plain.strip().splitlines() if ln.strip()]
    if not lines:
        return None
    alone = re.fullmatch(rf"\(?({letter})\)?[.:]?", lines[-1]) or re.match(rf"\(({letter})\)\s", lines[-1])
    return alone.group(1) if alone else None


def _choice_truth(truth: str, letters: str) -> str | None:
    m = re.fullmatch(rf"\s*\(?([{re.escape(letters)}])\)?\s*", truth)
    return m.group(1) if m else None


# --- math ----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def _parse_truth(truth: str, timeout: int | None) -> tuple[Any, ...]:
    """The truth parsed as math-verify parses gold answers: boxed, so the whole string is the expression."""
    from math_verify import parse

    return tuple(parse(f"\\boxed{{{truth}}}", parsing_timeout=timeout))


def _parse_answer(answer: str, timeout: int | None) -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # boxed_match_priority 0: a \boxed{} answer wins over any expression written after it.
    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return parse(answer, extraction_config=configs, parsing_timeout=timeout)


def check_math(answer: str, truth: str, timeout_seconds: int | None = 5) -> Verdict:
    """math-verify's verdict on `answer` against `truth`; `timeout` when a comparison ran out of time.

    Each (truth, answer) pair of parsed forms (sympy and text) is compared on its own, so one that sympy cannot
    handle does not hide another that matches, and a timeout is told apart from a wrong answer (math-verify's
    own `verify` reports both as False).
    """
    if timeout_seconds is None:
        return _check_math(answer, truth, None)
    return _check_math_isolated(answer, truth, timeout_seconds)


_MATH = Isolated(f"{__name__}:_check_math", warm="math_verify")


@lru_cache(maxsize=4096)  # sympy is the cost: the same answer checked twice (a pair's side, a resampled trace)
def _check_math_isolated(answer: str, truth: str, timeout: int) -> Verdict:
    try:
        return _MATH((answer, truth, timeout), deadline=3 * timeout + 2)
    except (TimeoutError, ChildProcessError):
        return Verdict("timeout", None, truth, "math")


@lru_cache(maxsize=4096)
def _check_math(answer: str, truth: str, timeout: int | None) -> Verdict:
    gold = _parse_truth(truth, timeout)
    pred = _parse_answer(answer, timeout)
    if not pred:
        return Verdict("no_answer", None, truth, "math")
    extracted = str(pred[-1] if isinstance(pred[-1], str) else pred[0])
    outcomes = [_same(g, p, timeout) for g in gold for p in pred]
    if True in outcomes:
        return Verdict("correct", extracted, truth, "math")
    return Verdict("timeout" if None in outcomes else "wrong", extracted, truth, "math")


def _same(gold: Any, pred: Any, timeout: int | None) -> bool | None:
    """math-verify's comparison of one parsed pair: None when it ran out of time, False when sympy failed on it
    (it fails in many ways on odd input; that pair does not match)."""
    from math_verify import verify
    from math_verify.errors import TimeoutException

    try:
        return bool(verify(gold, pred, timeout_seconds=timeout, raise_on_error=True))
    except TimeoutException:
        return None
    except Exception:  # noqa: BLE001
        return False


# --- exact match -----------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_SAID = re.compile(r"(?i:answer)\s*(?:is|:)\s*:?\s*(.+)")


def extract_exact(text: str) -> str | None:
    """The part of an answer an exact match compares: the last \\boxed{}, else what follows the last "answer
    is" / "Answer:", else the last line; without markdown, dollar signs or the final period.

    >>> extract_exact("So the capital is Paris.\\nAnswer: **Paris**.")
    'Paris'
    """
    boxed = _BOXED.findall(text)
    said = _SAID.findall(text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    found = boxed[-1] if boxed else said[-1] if said else lines[-1] if lines else ""
    found = re.sub(r"\*\*|__|\$", "", found).strip().rstrip(".").strip()
    return found or None


def _exact_key(text: str) -> str:
    return normalize_text(text).rstrip(".").strip()


def check_exact(answer: str, truth: str) -> Verdict:
    extracted = extract_exact(answer)
    if extracted is None:
        return Verdict("no_answer", None, truth, "exact")
    return Verdict("correct" if _exact_key(extracted) == _exact_key(truth) else "wrong", extracted, truth, "exact")


# --- one answer ------------------------------------------------------------------------------------------------


# A truth with a digit, a LaTeX command or an operator is math; words ("Paris", "mitochondria") are matched exactly.
_MATHY = re.compile(r"[\d\\^=+\-*/<>]")


def check_answer(answer: str, truth: str | None, checker: Checker = "auto", letters: str = "ABCDEFGHIJ",
                 timeout_seconds: int | None = 5) -> Verdict:
    """The verdict on `answer` against `truth`. `auto`: a truth that is one choice letter is checked as a choice,
    a truth with a digit, a LaTeX command or an operator as math, anything else (words) exactly."""
    if truth is None or not truth.strip():
        return Verdict("no_truth")
    truth = truth.strip()
    answers = _truth_list(truth)
    if answers is not None:
        verdicts = [check_answer(answer, t, checker, letters, timeout_seconds) for t in answers]
        return min(verdicts, key=lambda v: ("correct", "wrong").index(v.status) if v.status in ("correct", "wrong") else 2)
    letter = _choice_truth(truth, letters) if checker in ("auto", "choice") else None
    if letter is not None or checker == "choice":
        found = extract_choice(answer, letters)
        expected = letter or truth
        if found is None:
            return Verdict("no_answer", None, expected, "choice")
        return Verdict("correct" if found == expected else "wrong", found, expected, "choice")
    if checker == "math" or (checker == "auto" and _MATHY.search(truth)):
        return check_math(answer, truth, timeout_seconds)
    return check_exact(answer, truth)


def _truth_list(truth: str) -> list[str] | None:
    """The answers of a truth written as a JSON list (`["12", "twelve"]`), or None for any other truth."""
    if not truth.startswith("["):
        return None
    try:
        value = orjson.loads(truth)
    except orjson.JSONDecodeError:
        return None  # LaTeX such as [0, 1) is an interval, not a list
    # strings only: [1, 2] is as likely a closed interval as a list of two answers
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return None
    return value


def truth_of(meta: dict[str, Any], key: str = "ground_truth") -> str | None:
    """The ground truth in a row's parsed meta as text (a number as written, a list as JSON), or None."""
    value = meta.get(key)
    if value is None or isinstance(value, dict):
        return None
    return orjson.dumps(value).decode() if isinstance(value, list) else str(value)


def cut_in_reasoning(meta: dict[str, Any], side: str | None = None) -> bool:
    """Whether the generator stopped inside the reasoning (`finish_reason: reasoning_length`, per side for pairs)."""
    finish = meta.get("finish_reason")
    if isinstance(finish, dict):
        finish = finish.get(side) if side else None
    return finish == "reasoning_length"


def verdict_of(message: dict[str, Any] | None, truth: str | None, meta: dict[str, Any], side: str | None,
               cfg: VerifyConfig) -> Verdict:
    """The verdict on one assistant turn: truncated and malformed traces first, then its answer."""
    if cut_in_reasoning(meta, side):
        return Verdict("truncated", note="finish_reason=reasoning_length")
    try:
        answer = answer_of(message or {})
    except RowError as err:
        if err.reason == "unclosed_reasoning":
            return Verdict("truncated", note=err.message)
        return Verdict("malformed", note=f"{err.reason}: {err.message}")
    return check_answer(answer, truth, cfg.answer, cfg.letters, cfg.timeout_seconds)


# --- the stage -------------------------------------------------------------------------------------------------


class VerifyConfig(StageConfig):
    answer: Checker = Field("auto", description="how answers are checked: auto (by the ground truth), math, choice, "
                            "exact")
    truth_key: str = Field("ground_truth", description="the key of `meta` that holds the ground truth")
    letters: str = Field("ABCDEFGHIJ", min_length=2, description="the choice letters (MMLU-Pro has ten)")
    pairs: Literal["chosen", "both"] = Field(
        "both", description="preference rows: check chosen only, or both (chosen correct and rejected wrong)"
    )
    drop_truncated: bool = Field(True, description="drop traces cut inside their reasoning (truncated_reasoning)")
    drop_uncheckable: bool = Field(
        False, description="drop rows with no ground truth or no extractable answer (unverifiable); default: keep "
        "and count them"
    )
    timeout_seconds: int | None = Field(
        5, ge=1, description="math-verify's limit per parse and per comparison, in a child process; null: none"
    )


def _side_columns(kind: str) -> list[tuple[str, str, str | None]]:
    """(conversation column, suffix of the score columns, meta side) of each checked side."""
    if kind == "preference":
        return [("chosen", "_chosen", "chosen"), ("rejected", "_rejected", "rejected")]
    return [("messages", "", None)]


class Verify(Stage[VerifyConfig]):
    """Drop rows whose final answer does not match their ground truth, and traces cut inside their reasoning."""

    name = "verify"
    config_class = VerifyConfig

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg, kind = self.config, row_kind(frame)
        if kind == "prompt":
            raise ValueError("verify checks answers, and prompt rows have none: verify SFT or preference rows")
        metas = [orjson.loads(m) if m else {} for m in frame["meta"].to_list()]
        truths = [truth_of(m, cfg.truth_key) for m in metas]
        scored = keep_all(frame)
        verdicts: dict[str, list[Verdict]] = {}
        for col, suffix, side in _side_columns(kind):
            if side == "rejected" and cfg.pairs == "chosen":
                continue
            last = frame[col].list.last().to_list()
            verdicts[suffix] = [verdict_of(m, t, meta, side, cfg) for m, t, meta in zip(last, truths, metas)]
            scored = scored.with_columns(
                pl.Series(f"verdict{suffix}", [v.status for v in verdicts[suffix]], dtype=pl.String),
                pl.Series(f"extracted{suffix or '_answer'}", [v.extracted for v in verdicts[suffix]], dtype=pl.String),
            )
        return self._decide(scored, verdicts)

    def _decide(self, scored: pl.DataFrame, verdicts: dict[str, list[Verdict]]) -> pl.DataFrame:
        cfg = self.config
        first, label = (verdicts[""], "") if "" in verdicts else (verdicts["_chosen"], "chosen: ")

        def where(statuses: tuple[str, ...], found: list[Verdict] = first, prefix: str = label,
                  text: Any = Verdict.detail) -> list[str | None]:
            return [prefix + text(v) if v.status in statuses else None for v in found]

        rules: list[tuple[str, list[str | None]]] = []
        if cfg.drop_truncated:
            rules.append(("truncated_reasoning", where(("truncated",))))
        rules.append(("malformed_reasoning", where(("malformed",))))
        rules.append(("wrong_answer", where(("wrong",))))
        if "_rejected" in verdicts:
            rules.append(("rejected_correct", where(("correct",), verdicts["_rejected"], "rejected: ")))
        if cfg.drop_uncheckable:
            rules.append(("unverifiable", where(UNCHECKABLE, text=lambda v: v.status)))
        for reason, details in rules:
            s = pl.Series("_d", details, dtype=pl.String)
            scored = decide(scored.with_columns(s), pl.col("_d").is_not_null(), reason, pl.col("_d")).drop("_d")
        return scored

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        return {"verify": verdict_counts(scored)}


def verdict_counts(scored: pl.DataFrame) -> dict[str, Any]:
    """Verdicts counted overall and per source, with accuracy = correct / (correct + wrong) (None when neither)."""
    col = "verdict" if "verdict" in scored.columns else "verdict_chosen"

    def counts(frame: pl.DataFrame) -> dict[str, Any]:
        n = {s: int((frame[col] == s).sum()) for s in STATUSES}
        checked = n["correct"] + n["wrong"]
        return {**n, "rows": frame.height, "accuracy": round(n["correct"] / checked, 4) if checked else None}

    sources = scored["source"].unique(maintain_order=True).sort().to_list() if "source" in scored.columns else []
    return {"all": counts(scored), "by_source": {s: counts(scored.filter(pl.col("source") == s)) for s in sources}}
