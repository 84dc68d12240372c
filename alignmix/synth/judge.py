"""An LLM judge, UltraFeedback-style: each response is rated 1 to 5 on helpfulness, honesty, instruction
following and truthfulness, each with a one-sentence rationale. A judgement that cannot be parsed keeps its
raw text, gets a null rating and is counted; it is never dropped.

    >>> parse_judgement("Helpfulness: 4\\nRationale: Clear.\\nHonesty: 5\\nRationale: No claims.", ["helpfulness", "honesty"])
    Judgement(ratings={'helpfulness': 4, 'honesty': 5}, rationales={'helpfulness': 'Clear.', 'honesty': 'No claims.'}, rating=4.5, raw='Helpfulness: 4\\nRationale: Clear.\\nHonesty: 5\\nRationale: No claims.')

Pairwise judging (optional) asks which of two answers is better in both orders (A,B then B,A) and records
whether the verdict survives the swap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.store import MixStore, fingerprint
from alignmix.synth.backends import Backend, GenerationRequest, SamplingParams, get_backend
from alignmix.synth.batches import BatchStore, Timer, rejected_frame
from alignmix.synth.config import JudgeConfig, PreferencesConfig
from alignmix.synth.progress import maybe_progress

STAGE = "judge"
VERSION = "judge-v1"

ASPECT_GUIDE = {
    "helpfulness": "how well the answer meets the user's need: correct, informative, useful",
    "honesty": "whether the answer is honest about what it knows and expresses uncertainty where it should",
    "instruction_following": "how closely the answer follows the instruction and its constraints",
    "truthfulness": "whether the answer is free of made-up facts and contradictions",
}


def label(aspect: str) -> str:
    """'instruction_following' -> 'Instruction following'."""
    return aspect.replace("_", " ").capitalize()


def rating_prompt(instruction: str, response: str, aspects: list[str]) -> str:
    lines = [
        "You are an expert judge of AI assistant answers. Rate the answer to the instruction below on each aspect "
        "from 1 (poor) to 5 (excellent), with a one-sentence rationale.",
        "",
        *[f"- {label(a)}: {ASPECT_GUIDE.get(a, a)}" for a in aspects],
        "",
        f"Instruction:\n{instruction}",
        "",
        f"Answer:\n{response}",
        "",
        "Reply in exactly this format:",
        *[f"{label(a)}: <1-5>\nRationale: <one sentence>" for a in aspects],
    ]
    return "\n".join(lines)


@dataclass
class Judgement:
    ratings: dict[str, int | None]
    rationales: dict[str, str | None]
    rating: float | None  # the mean over aspects; None unless every aspect parsed
    raw: str

    @property
    def parsed(self) -> bool:
        return self.rating is not None

    def to_dict(self) -> dict[str, Any]:
        return {"ratings": self.ratings, "rationales": self.rationales, "rating": self.rating, "raw": self.raw,
                "parsed": self.parsed}  # fmt: skip


def parse_judgement(text: str, aspects: list[str]) -> Judgement:
    """Read `Aspect: <1-5>` and `Rationale: ...` lines; tolerant of markdown bold, '4/5' and extra words."""
    labels = {a: re.escape(label(a)).replace(r"\ ", r"[\s_-]+") for a in aspects}
    any_label = "|".join(labels.values())
    ratings: dict[str, int | None] = {}
    rationales: dict[str, str | None] = {}
    for a, pat in labels.items():
        m = re.search(rf"(?im)^[\s*#-]*(?:{pat})[\s*]*:[\s*]*([1-5])(?:\s*/\s*5)?\b", text)
        ratings[a] = int(m.group(1)) if m else None
        rationales[a] = None
        if m:
            # The rationale belongs to this aspect only if it comes before the next aspect's label.
            segment = re.split(rf"(?im)^[\s*#-]*(?:{any_label})[\s*]*:", text[m.end() :], maxsplit=1)[0]
            r = re.search(r"(?is)Rationale[\s*]*:[\s*]*(.*)", segment)
            if r and r.group(1).strip():
                rationales[a] = r.group(1).strip()
    values = list(ratings.values())
    rating = round(sum(values) / len(values), 6) if all(v is not None for v in values) else None  # type: ignore[misc]
    return Judgement(ratings, rationales, rating, text)


class Judge:
    """Rates responses with any backend. With a chat template, the answer is prefilled with the first aspect's
    label so that even a small model starts in the format; without one, the chat endpoint gets the prompt."""

    def __init__(self, cfg: JudgeConfig, backend: Backend | None = None):
        self.cfg = cfg
        self.backend = backend or get_backend(cfg.backend_spec())
        try:
            self.backend.render_chat([{"role": "user", "content": "x"}])
            self.prefill = True
        except ValueError:
            self.prefill = False

    def _request(self, content: str, prefill: str, max_new_tokens: int) -> GenerationRequest:
        eos = self.backend.special_tokens().get("eos_token")
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=self.cfg.temperature, stop=(eos,) if eos else (), seed=0)
        if self.prefill:
            return GenerationRequest(prompt=self.backend.render_chat([{"role": "user", "content": content}]) + prefill, params=params)
        return GenerationRequest(messages=[{"role": "user", "content": content}], params=params)

    def rate(self, items: list[tuple[str, str]], progress=None) -> tuple[list[Judgement], int]:
        """Judgements for (instruction, response) pairs, and the completion tokens spent."""
        first = f"{label(self.cfg.aspects[0])}:"
        reqs = [self._request(rating_prompt(i, r, self.cfg.aspects), first, self.cfg.max_new_tokens) for i, r in items]
        results = self.backend.generate(reqs, progress)
        out = [parse_judgement((first if self.prefill else "") + res.text, self.cfg.aspects) for res in results]
        return out, sum(r.completion_tokens for r in results)

    def compare(self, items: list[tuple[str, str, str]], progress=None) -> list[dict[str, Any]]:
        """Pairwise verdicts for (instruction, chosen, rejected), asked as (A=chosen, B=rejected) and swapped.

        `consistent` is true when the same answer wins in both orders; `agrees` when that answer is the chosen one.
        """
        ask = "Which answer to the instruction is better? Reply with A or B.\n\nInstruction:\n{i}\n\nAnswer A:\n{a}\n\nAnswer B:\n{b}"
        reqs = []
        for ins, chosen, rejected in items:
            reqs.append(self._request(ask.format(i=ins, a=chosen, b=rejected), "Better answer:", 4))
            reqs.append(self._request(ask.format(i=ins, a=rejected, b=chosen), "Better answer:", 4))
        res = self.backend.generate(reqs, progress)
        out = []
        for k in range(len(items)):
            ab, ba = _letter(res[2 * k].text), _letter(res[2 * k + 1].text)
            winner_ab = {"A": "chosen", "B": "rejected"}.get(ab or "")
            winner_ba = {"A": "rejected", "B": "chosen"}.get(ba or "")
            consistent = None if not (winner_ab and winner_ba) else winner_ab == winner_ba
            out.append({
                "ab": ab, "ba": ba, "raw_ab": res[2 * k].text, "raw_ba": res[2 * k + 1].text,
                "consistent": consistent, "agrees": (winner_ab == "chosen") if consistent else None,
            })  # fmt: skip
        return out


def _letter(text: str) -> str | None:
    m = re.search(r"\b([AB])\b", text)
    return m.group(1) if m else None


def _response_rows(source: Any) -> pl.DataFrame:
    """Response rows from a frame, or a directory `generate responses` wrote (data/, else its batches)."""
    if isinstance(source, pl.DataFrame):
        return source
    store = MixStore(source)
    if store.shard_files():
        return store.read()
    files = sorted((Path(source) / "batches" / "responses").glob("*.kept.parquet"))
    if not files:
        raise FileNotFoundError(f"{source} holds no responses: run `alignmix generate responses ... --out {source}` first")
    return pl.concat([pl.read_parquet(f) for f in files])


def judge_batch(judge: Judge, rows: pl.DataFrame, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    timer = Timer()
    items = [(m[-2]["content"], m[-1]["content"]) for m in rows["messages"].to_list()]
    judgements, tokens = judge.rate(items, progress)
    metas = []
    for meta, j in zip(rows["meta"].to_list(), judgements):
        m = orjson.loads(meta)
        m["judge"] = {**judge.backend.describe(), "aspects": judge.cfg.aspects, **j.to_dict()}
        metas.append(orjson.dumps(m, option=orjson.OPT_SORT_KEYS).decode())
    kept = rows.with_columns(pl.Series("meta", metas, dtype=pl.String))
    counters = {
        "seconds": timer.seconds(),
        "completion_tokens": tokens,
        "judged": len(judgements),
        "unparseable": sum(not j.parsed for j in judgements),
    }
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
    judge = Judge(cfg.judge)
    with maybe_progress(f"judge {judge.backend.model}", rows.height, progress) as bar:
        for b, start in enumerate(range(0, len(prompt_ids), cfg.prompts_per_batch)):
            chunk = rows.filter(pl.col("_prompt_id").is_in(prompt_ids[start : start + cfg.prompts_per_batch])).drop("_prompt_id")
            if batches.done(b):
                bar(chunk.height, 0)
                continue
            batches.write(b, *judge_batch(judge, chunk, bar))
    return batches.finish("sft", {"judge": judge.backend.describe(), "config": cfg.judge.model_dump(mode="json")},
                          write_data=write_data)
