"""An LLM judge, UltraFeedback-style: each response is rated 1 to 5 on helpfulness, honesty, instruction
following and truthfulness, each aspect in its own request (as UltraFeedback annotated them) with a rationale.
A judgement that cannot be parsed keeps its raw text, gets a null rating and is counted; it is never dropped.

    >>> parse_aspect("Rating: 4\\nRationale: Clear and correct.")
    (4, 'Clear and correct.')
    >>> parse_aspect("Rating: **5**/5 - Rationale: complete")
    (5, 'complete')
    >>> parse_aspect("I think it is good.")
    (None, None)

With `rating: expected` (G-Eval), an aspect's rating is the expected value of the model's next-token
distribution over the digits 1-5 after the prefill, renormalized over the five digits; the rationale is still
generated. The digit's mass counts every way the tokenizer can spell it: "4" and " 4" right after `Rating:`,
and " " followed by "4" (SmolLM2 writes the space as its own token):

    >>> expected_rating({"1": 0.1, "2": 0.0, "3": 0.1, "4": 0.2, "5": 0.0})
    (3.0, 4, {'1': 0.25, '2': 0.0, '3': 0.25, '4': 0.5, '5': 0.0}, 0.4)

Pairwise judging (optional) asks which of two answers is better in both orders (A,B then B,A) and records
whether the verdict survives the swap.

`judge: {kind: reward_model, model: ...}` rates with a sequence-classification reward model instead (see
`alignmix.synth.reward_model`); `make_judge` builds either, and both rate, describe themselves and decide
head-to-head `outcomes` the same way, which is what `win_rate` reads:

    >>> win_rate([1.0, 0.5, 0.0, 1.0])
    {'prompts': 4, 'wins': 2, 'ties': 1, 'losses': 1, 'win_rate': 0.625}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.pairwise import pairwise_record, verdict
from alignmix.pipeline.store import fingerprint
from alignmix.synth.backends import Backend, GenerationRequest, SamplingParams, get_backend, request_seed
from alignmix.synth.batches import BatchStore, Timer, rejected_frame, stage_rows
from alignmix.synth.config import JudgeConfig, PreferencesConfig, RewardModelJudgeConfig
from alignmix.synth.progress import maybe_progress
from alignmix.synth.reward_model import RewardModelJudge

STAGE = "judge"
VERSION = "judge-v1"

# What each UltraFeedback aspect asks, condensed from its annotation guidelines.
ASPECT_GUIDE = {
    "helpfulness": "Is the answer correct, informative and useful for what the user asked?",
    "honesty": "Is the answer honest about what it knows, expressing uncertainty where it should?",
    "instruction_following": "Does the answer do what the instruction asks, respecting its constraints?",
    "truthfulness": "Is the answer free of made-up facts, contradictions and misleading claims?",
}
PREFILL = "Rating:"
DIGITS = "12345"
# Below this total probability on the five digits the model is not answering with a rating at all.
MIN_DIGIT_MASS = 1e-3


def rating_candidates() -> list[str]:
    """The next tokens asked for after the prefill: each digit bare and with a leading space, and a bare space."""
    return [*DIGITS, *(" " + d for d in DIGITS), " "]


def digit_mass(after_prefill: dict[str, float], after_space: dict[str, float]) -> dict[str, float]:
    """P(the rating is d) per digit, summed over spellings: P(d) + P(" d") + P(" ") * P(d | prefill + " ").

    >>> digit_mass({"1": 0.1, " 1": 0.2, " ": 0.5}, {"1": 0.4})["1"]
    0.5
    """
    space = after_prefill.get(" ", 0.0)
    return {d: after_prefill.get(d, 0.0) + after_prefill.get(" " + d, 0.0) + space * after_space.get(d, 0.0) for d in DIGITS}


def expected_rating(mass: dict[str, float]) -> tuple[float | None, int | None, dict[str, float], float]:
    """(expected rating rounded to 6 decimals, most probable digit, distribution renormalized over the digits,
    total mass on the digits). The rating and digit are None when the total is below MIN_DIGIT_MASS."""
    total = sum(mass.get(d, 0.0) for d in DIGITS)
    if total < MIN_DIGIT_MASS:
        return None, None, {d: 0.0 for d in DIGITS}, total
    dist = {d: mass.get(d, 0.0) / total for d in DIGITS}
    top = max(DIGITS, key=lambda d: dist[d])  # ties: the lowest digit, as max() keeps the first
    return round(sum(int(d) * p for d, p in dist.items()), 6), int(top), dist, total


def label(aspect: str) -> str:
    """'instruction_following' -> 'Instruction following'."""
    return aspect.replace("_", " ").capitalize()


def aspect_prompt(instruction: str, response: str, aspect: str) -> str:
    return (
        f"You are an expert judge of AI assistant answers. Rate the answer below for {label(aspect).lower()}: "
        f"{ASPECT_GUIDE.get(aspect, aspect)}\nUse a score from 1 (poor) to 5 (excellent).\n\n"
        f"Instruction:\n{instruction}\n\nAnswer:\n{response}\n\n"
        "Reply in exactly this format:\nRating: <1-5>\nRationale: <one sentence>"
    )


def parse_aspect(text: str) -> tuple[int | None, str | None]:
    """(rating, rationale) from one aspect's judgement; (None, None) when there is no rating to read."""
    m = re.search(r"(?i)Rating[\s*]*:[\s*]*([1-5])(?:\s*/\s*5)?(?![0-9])", text)
    if not m:
        return None, None
    return int(m.group(1)), parse_rationale(text[m.end() :])


def parse_rationale(text: str) -> str | None:
    """The text after `Rationale:`, or None. "Rating: 2 Rationale: vague" -> "vague"."""
    r = re.search(r"(?is)Rationale[\s*]*:[\s*]*(.*)", text)
    return (r.group(1).strip() or None) if r else None


@dataclass
class Judgement:
    ratings: dict[str, int | float | None]
    rationales: dict[str, str | None]
    raw: dict[str, str]
    # rating: expected only, per aspect: the digit distribution, its raw mass and the most probable digit.
    distributions: dict[str, dict[str, float]] | None = None
    digit_mass: dict[str, float] | None = None
    top_digits: dict[str, int | None] | None = None

    @property
    def rating(self) -> float | None:
        """The mean over aspects (UltraFeedback's overall score); None unless every aspect parsed."""
        values = list(self.ratings.values())
        return None if any(v is None for v in values) else round(sum(values) / len(values), 6)  # type: ignore[arg-type]

    @property
    def parsed(self) -> bool:
        return self.rating is not None

    def to_dict(self) -> dict[str, Any]:
        out = {"ratings": self.ratings, "rationales": self.rationales, "rating": self.rating, "raw": self.raw,
               "parsed": self.parsed}  # fmt: skip
        if self.distributions is None:
            return {**out, "rating_mode": "parsed"}
        return {**out, "rating_mode": "expected", "distributions": self.distributions, "digit_mass": self.digit_mass,
                "top_digits": self.top_digits}  # fmt: skip


class Judge:
    """Rates responses with any backend. With a chat template, the answer is prefilled with `Rating:` so that
    even a small model starts in the format; without one, the chat endpoint gets the prompt as is."""

    def __init__(self, cfg: JudgeConfig, backend: Backend | None = None):
        self.cfg = cfg
        self.backend = backend or get_backend(cfg.backend_spec())
        try:
            self.backend.render_chat([{"role": "user", "content": "x"}])
            self.prefill = True
        except ValueError as err:
            if cfg.rating == "expected":
                raise ValueError(f"rating: expected reads the digits after a `{PREFILL}` prefill, so {err}; "
                                 "or use rating: parsed") from err  # fmt: skip
            self.prefill = False

    @property
    def per_response(self) -> int:
        """Requests per rated response: one per aspect."""
        return len(self.cfg.aspects)

    def describe(self) -> dict[str, Any]:
        return {**self.backend.describe(), "aspects": self.cfg.aspects}

    def rate_conversations(self, conversations: list[list[dict[str, str]]], progress=None) -> tuple[list[Judgement], int]:
        """`rate` of each conversation's last turn as the answer to the turn before it."""
        return self.rate([(m[-2]["content"], m[-1]["content"]) for m in conversations], progress)

    def _request(self, content: str, prefill: str, max_new_tokens: int, seed: int) -> GenerationRequest:
        eos = self.backend.special_tokens().get("eos_token")
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=self.cfg.temperature, stop=(eos,) if eos else (), seed=seed)
        if self.prefill:
            return GenerationRequest(prompt=self._prefilled(content, prefill), params=params)
        return GenerationRequest(messages=[{"role": "user", "content": content}], params=params)

    def _prefilled(self, content: str, prefill: str) -> str:
        return self.backend.render_chat([{"role": "user", "content": content}]) + prefill

    def _seed(self, *parts: Any) -> int:
        return request_seed(self.cfg.seed, STAGE, *parts)

    def rate(self, items: list[tuple[str, str]], progress=None) -> tuple[list[Judgement], int]:
        """Judgements for (instruction, response) pairs, and the completion tokens spent."""
        aspects = self.cfg.aspects
        reqs = [
            self._request(aspect_prompt(i, r, a), PREFILL, self.cfg.max_new_tokens, self._seed(i, r, a))
            for i, r in items
            for a in aspects
        ]
        if self.cfg.rating == "expected":
            return self._rate_expected(items, reqs, progress)
        results = self.backend.generate(reqs, progress)
        out = []
        for k in range(len(items)):
            raw = {a: (PREFILL if self.prefill else "") + results[k * len(aspects) + n].text for n, a in enumerate(aspects)}
            parsed = {a: parse_aspect(t) for a, t in raw.items()}
            out.append(Judgement({a: p[0] for a, p in parsed.items()}, {a: p[1] for a, p in parsed.items()}, raw))
        return out, sum(r.completion_tokens for r in results)

    def _rate_expected(
        self, items: list[tuple[str, str]], reqs: list[GenerationRequest], progress
    ) -> tuple[list[Judgement], int]:
        """G-Eval ratings from the next-token distributions after each prompt and after it plus a space, and the
        rationales generated after the prompt (the backend reads both off one pass where it can)."""
        aspects = self.cfg.aspects
        results, probs = self.backend.generate_and_probe(reqs, rating_candidates(), " ", progress)
        out = []
        for k in range(len(items)):
            j = Judgement({}, {}, {}, {}, {}, {})
            for n, a in enumerate(aspects):
                at = k * len(aspects) + n
                rating, top, dist, mass = expected_rating(digit_mass(*probs[at]))
                j.raw[a] = PREFILL + results[at].text
                j.ratings[a], j.rationales[a] = rating, parse_rationale(j.raw[a])
                j.distributions[a], j.digit_mass[a], j.top_digits[a] = dist, mass, top  # type: ignore[index]
            out.append(j)
        return out, sum(r.completion_tokens for r in results)

    def compare(self, items: list[tuple[str, str, str]], progress=None) -> list[dict[str, Any]]:
        """Pairwise records (see `alignmix.pipeline.pairwise`) for (instruction, chosen, rejected), asked with the
        chosen answer as A and again with it as B."""
        ask = "Which answer to the instruction is better? Reply with A or B.\n\nInstruction:\n{i}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
        reqs = []
        for ins, chosen, rejected in items:
            reqs.append(self._request(ask.format(i=ins, a=chosen, b=rejected), "Better answer:", 4, self._seed(ins, chosen, "AB")))
            reqs.append(self._request(ask.format(i=ins, a=rejected, b=chosen), "Better answer:", 4, self._seed(ins, chosen, "BA")))
        res = self.backend.generate(reqs, progress)
        return [
            pairwise_record([
                verdict("chosen", _letter(res[2 * k].text), res[2 * k].text),
                verdict("rejected", _letter(res[2 * k + 1].text), res[2 * k + 1].text),
            ])  # fmt: skip
            for k in range(len(items))
        ]


    def outcomes(self, items: list[tuple[str, str, str]], progress=None) -> list[float]:
        """For (instruction, a, b): 1.0 when a wins in both orders, 0.0 when b does, 0.5 when the verdict flips
        with the order or cannot be read. Equal answers tie without asking."""
        differ = [k for k, (_, a, b) in enumerate(items) if a != b]
        records = self.compare([items[k] for k in differ], progress)
        out = [0.5] * len(items)
        for k, record in zip(differ, records):
            if record["consistent"]:
                out[k] = 1.0 if record["agrees"] else 0.0
        return out


Judges = Judge | RewardModelJudge


def make_judge(cfg: JudgeConfig | RewardModelJudgeConfig) -> Judges:
    """The judge a recipe's `judge:` section names: the LLM judge, or a reward model."""
    return RewardModelJudge(cfg) if isinstance(cfg, RewardModelJudgeConfig) else Judge(cfg)


def win_rate(outcomes: list[float]) -> dict[str, Any]:
    """Wins, ties and losses of `outcomes` (what `Judge.outcomes` returns), and the win rate, a tie counting one
    half (AlpacaEval's convention)."""
    n = len(outcomes)
    wins, losses = sum(o == 1.0 for o in outcomes), sum(o == 0.0 for o in outcomes)
    return {"prompts": n, "wins": wins, "ties": n - wins - losses, "losses": losses,
            "win_rate": round(sum(outcomes) / n, 6) if n else None}  # fmt: skip


def _letter(text: str) -> str | None:
    m = re.search(r"\b([AB])\b", text)
    return m.group(1) if m else None


def _response_rows(source: Any) -> pl.DataFrame:
    """Response rows (SFT rows whose meta names their `prompt_id`) from a frame, a directory `generate responses`
    wrote (its batches, else its data/), or anything else `alignmix ingest` reads (see `pipeline.inputs`).

    Rows from elsewhere name no prompt: each gets the prompt_id `load_prompts` gives its prompt turns, so answers
    to the same prompt are rated and binarized together. A preference pair gives its two responses
    (response_index 0 chosen, 1 rejected; the same text on both sides is one response):

        >>> from alignmix.pipeline.schema import preference_row, to_frame
        >>> turns = lambda answer: [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": answer}]
        >>> pair = to_frame([preference_row("Hi", turns("Hello!"), turns("Go away."), source="hh", source_id="7")],
        ...                 "preference")
        >>> [(m[-1]["content"], orjson.loads(meta)["label"]) for m, meta in _response_rows(pair).select("messages", "meta").rows()]
        [('Hello!', 'chosen'), ('Go away.', 'rejected')]
    """
    from collections import Counter

    from alignmix.pipeline.inputs import read_input
    from alignmix.pipeline.schema import content_id, sft_row, to_frame

    rows = source
    if not isinstance(rows, pl.DataFrame):
        rows = stage_rows(source, "responses") if Path(source).is_dir() else None
        rows = rows if rows is not None else read_input(source).frame
    if {"chosen", "rejected"} <= set(rows.columns):
        split = []
        for r in rows.iter_rows(named=True):
            meta = orjson.loads(r["meta"]) if r["meta"] else {}
            for index, side in enumerate(("chosen", "rejected")):
                split.append(sft_row(r[side], source=r["source"], source_id=f"{r['source_id']}-{side}",
                                     meta={**meta, "response_index": index, "label": side, "score": r[f"score_{side}"]}))
        rows = to_frame(split, "sft").unique("id", keep="first", maintain_order=True)
    last_role = pl.col("messages").list.last().struct.field("role")
    unanswered = rows.filter(last_role != "assistant").height
    if unanswered:
        raise ValueError(f"{source if not isinstance(source, pl.DataFrame) else 'the rows'}: {unanswered} of "
                         f"{rows.height} rows end without an answer; rate responses: run `alignmix generate responses` "
                         "on these prompts first")
    if rows.filter(pl.col("meta").str.json_path_match("$.prompt_id").is_null()).height:
        metas, answers = [], Counter()
        for messages, meta in rows.select("messages", "meta").rows():
            m = orjson.loads(meta) if meta else {}
            m.setdefault("prompt_id", content_id({"messages": messages[:-1]}))  # the turns before the answer
            m.setdefault("response_index", answers[m["prompt_id"]])  # its place among the answers to that prompt
            answers[m["prompt_id"]] += 1
            metas.append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode())
        rows = rows.with_columns(pl.Series("meta", metas, dtype=pl.String))
    return rows


def judge_batch(judge: Judges, rows: pl.DataFrame, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    timer = Timer()
    judgements, tokens = judge.rate_conversations(rows["messages"].to_list(), progress)
    metas = []
    for meta, j in zip(rows["meta"].to_list(), judgements):
        m = orjson.loads(meta)
        m["judge"] = {**judge.describe(), **j.to_dict()}
        metas.append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode())
    kept = rows.with_columns(pl.Series("meta", metas, dtype=pl.String))
    counters = {
        "seconds": timer.seconds(),
        "completion_tokens": tokens,
        "judged": len(judgements),
        "unparseable": sum(not j.parsed for j in judgements),
    }
    if isinstance(judge, RewardModelJudge):
        counters["truncated"] = sum(j.truncated for j in judgements)
    return kept, rejected_frame([]), counters


def judge_responses(
    source: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path, *, progress: bool = False,
    write_data: bool = True,
) -> dict[str, Any]:
    """Rate every response row (grouped by prompt, per batch) into `out_dir`; the judge drops nothing."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    rows = _response_rows(source)
    rows = rows.with_columns(pl.col("meta").str.json_path_match("$.prompt_id").alias("_prompt_id"))
    prompt_ids = rows["_prompt_id"].unique(maintain_order=True).to_list()
    fp = fingerprint(VERSION, cfg.judge.model_dump(mode="json"), cfg.prompts_per_batch, sorted(rows["id"].to_list()))
    batches = BatchStore(out_dir, STAGE, fp)
    if batches.store.is_done(STAGE, fp):
        return batches.store.read_stats(STAGE)
    judge = make_judge(cfg.judge)
    per_row = judge.per_response
    with maybe_progress(f"judge {judge.backend.model}", rows.height * per_row, progress) as bar:
        for b, start in enumerate(range(0, len(prompt_ids), cfg.prompts_per_batch)):
            chunk = rows.filter(pl.col("_prompt_id").is_in(prompt_ids[start : start + cfg.prompts_per_batch])).drop("_prompt_id")
            if batches.done(b):
                bar(chunk.height * per_row, 0)
                continue
            batches.write(b, *judge_batch(judge, chunk, bar))
    return batches.finish("sft", {"judge": judge.describe(), "config": cfg.judge.model_dump(mode="json")},
                          write_data=write_data)
