"""Reasoning quality: rules for the thinking of an assistant turn (its `reasoning_content`), which the answer
rules of `quality` never read. Rows without reasoning (non-thinking turns) pass untouched.

    empty_reasoning    a thinking turn whose reasoning is empty (`<think></think>` with nothing inside), on a row
                       not declared non-thinking (Qwen3's `/no_think` in a user or system turn, or meta
                       `thinking: false` / `thinking.enable_thinking: false`, where an empty block is the format)
                                                                     detail: "response: empty reasoning"
    reasoning_loop     the reasoning goes round in circles: a share of its paragraphs repeats an earlier one, or one
                       sentence comes back too often                 detail: "chosen: 0.4 of 30 paragraphs repeat"
                                                                             "response: a sentence 14 times: 'alte...'"
    language_switch    a share of the reasoning is in another language than the rest of it (lid.176 per paragraph,
                       as the `language` stage identifies)           detail: "response: 0.35 not in en (zh)"

Columns: `repeated_paragraph_share`, `max_sentence_repeats`, `reasoning_lang`, `language_switch_share` (of the
first response checked that has reasoning; null without reasoning). Lengths and caps of the reasoning are the
`length` stage's (`max_reasoning`), decontamination reads the problem (`decontam`'s user turns), never the trace.

Why the defaults (measured on public traces: 413 DeepSeek-R1 traces of MMLU-Pro questions, luckyIITR/r1-distill,
all of them right; 544 Sky-T1 outputs on Minerva-Math, NovaSky-AI/SkyThought, 299 of them with a closed thought
block and 108 cut at the token limit inside it):

- `max_repeated_paragraph_share` 0.25 (paragraphs of 5 words or more, compared after normalization). Closed
  traces repeat at most 0.143 (R1), 0.167 and 0.208 (Sky-T1) of their paragraphs; the cut ones, which stopped
  at the token limit reach 0.65 and 0.90, with a median of 0.21 and 0.34. 0.25 drops no closed trace, and 14 of
  43 and 40 of 65 cut ones (the rest ran out of budget on a long derivation without going round).
- `max_sentence_repeats` 10 (sentences of 5 words or more). The most a closed trace says one sentence is 4 (R1),
  5 and 8 (Sky-T1); cut traces reach 27 and 56 ("Alternatively, perhaps I need to consider ...").
- `max_language_switch` 0.2 (paragraphs with 40 letters or more, lid.176 confidence 0.5 or more). On these
  English traces the share identified as another language is at most 0.036 (R1) and 0.087 (Sky-T1: LaTeX-heavy
  paragraphs), so 0.2 leaves a margin for formulas and catches a trace that thinks a fifth of the time in
  another language (R1-Zero's known language mixing).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal

import orjson
import polars as pl
from pydantic import Field

from alignmix.filters.language import LanguageID
from alignmix.pipeline.schema import normalize_text, row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, histogram, keep_all

_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
NO_THINK = "/no_think"


def has_reasoning_field(frame: pl.DataFrame, column: str) -> bool:
    """Whether a conversation column's messages carry `reasoning_content` (files written before they did don't)."""
    dtype = frame.schema[column]
    return isinstance(dtype, pl.List) and any(f.name == "reasoning_content" for f in dtype.inner.fields)


def final_reasoning(frame: pl.DataFrame, column: str) -> pl.Expr:
    """The reasoning of the last turn of a conversation column (null where there is none)."""
    if not has_reasoning_field(frame, column):
        return pl.repeat(None, pl.len(), dtype=pl.String)  # one null per row (a bare literal would be one value)
    return pl.col(column).list.last().struct.field("reasoning_content")


def paragraphs(text: str, min_words: int) -> list[str]:
    return [p for p in _PARAGRAPH.split(text) if len(p.split()) >= min_words]


def repeated_paragraphs(text: str, min_words: int = 5) -> tuple[float, int]:
    """(share of paragraphs that repeat an earlier one after normalization, paragraphs counted).

    >>> repeated_paragraphs("Let me add 2 and 3 now.\\n\\nWait, let me add 2 and 3 now.\\n\\nLet me add 2 and 3 now.")
    (0.333333, 3)
    """
    keys = [normalize_text(p) for p in paragraphs(text, min_words)]
    return (round(1 - len(set(keys)) / len(keys), 6) if keys else 0.0), len(keys)


def most_repeated_sentence(text: str, min_words: int = 5) -> tuple[int, str]:
    """(times the most repeated sentence occurs, that sentence normalized); (0, "") without sentences."""
    counts = Counter(normalize_text(s) for s in _SENTENCE.split(text) if len(s.split()) >= min_words)
    if not counts:
        return 0, ""
    sentence, n = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
    return n, sentence


def declared_non_thinking(messages: list[dict[str, Any]], meta: dict[str, Any]) -> bool:
    """Whether a row says it does not think: `/no_think` in a user or system turn (Qwen3's soft switch), or meta
    `thinking: false` / `thinking: {enable_thinking: false}` (the generators record their thinking config)."""
    if any(NO_THINK in (m.get("content") or "") for m in messages if m.get("role") in ("user", "system")):
        return True
    thinking = meta.get("thinking")
    if isinstance(thinking, dict):
        thinking = thinking.get("enable_thinking")
    return thinking is False


class ReasoningConfig(StageConfig):
    responses: Literal["chosen", "both"] = Field("chosen", description="which preference responses to check")
    empty_reasoning: bool = Field(True, description="drop thinking turns with an empty reasoning block")
    max_repeated_paragraph_share: float | None = Field(
        0.25, gt=0, le=1, description="largest share of paragraphs that repeat an earlier one; null: no limit"
    )
    min_paragraph_words: int = Field(5, ge=1, description="shorter paragraphs are not compared")
    max_sentence_repeats: int | None = Field(
        10, ge=2, description="most times one sentence may occur in the reasoning; null: no limit"
    )
    min_sentence_words: int = Field(5, ge=1, description="shorter sentences are not counted")
    max_language_switch: float | None = Field(
        0.2, gt=0, lt=1, description="largest share of the reasoning (in characters of identified paragraphs) in "
        "another language than its main one; null: no check (and no language ID)",
    )
    language_min_letters: int = Field(40, ge=1, description="paragraphs with fewer letters are not identified")
    language_min_score: float = Field(
        0.5, ge=0, le=1, description="a paragraph counts as another language only at this lid.176 confidence or more"
    )


class _Found:
    """What the rules found in one row: measurements, and a detail per rule it breaks."""

    def __init__(self) -> None:
        self.share: float | None = None
        self.repeats: int | None = None
        self.lang: str | None = None
        self.switch: float | None = None
        self.details: dict[str, str] = {}

    def note(self, reason: str, detail: str) -> None:
        self.details.setdefault(reason, detail)


class ReasoningFilter(Stage[ReasoningConfig]):
    """Drop thinking turns with empty, looping or language-switching reasoning."""

    name = "reasoning"
    config_class = ReasoningConfig
    REASONS = ("empty_reasoning", "reasoning_loop", "language_switch")

    def __init__(self, config: ReasoningConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._lid: LanguageID | None = None

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        kind = row_kind(frame)
        columns = {"sft": ["messages"], "prompt": [], "preference": ["chosen"]}[kind]
        if kind == "preference" and self.config.responses == "both":
            columns = ["chosen", "rejected"]
        found = [_Found() for _ in range(frame.height)]
        metas = [orjson.loads(m) if m else {} for m in frame["meta"].to_list()] if "meta" in frame.columns else None
        for col in columns:
            label = "response" if col == "messages" else col
            conversations = frame[col].to_list()
            reasoning = frame.select(final_reasoning(frame, col)).to_series().to_list()
            for i, text in enumerate(reasoning):
                if text is not None:
                    self._check(found[i], label, text, conversations[i], metas[i] if metas else {})
        if self.config.max_language_switch is not None:
            self._languages(found, columns, frame)
        scored = keep_all(frame).with_columns(
            pl.Series("repeated_paragraph_share", [f.share for f in found], dtype=pl.Float64),
            pl.Series("max_sentence_repeats", [f.repeats for f in found], dtype=pl.Int64),
            pl.Series("reasoning_lang", [f.lang for f in found], dtype=pl.String),
            pl.Series("language_switch_share", [f.switch for f in found], dtype=pl.Float64),
        )
        for reason in self.REASONS:
            s = pl.Series("_d", [f.details.get(reason) for f in found], dtype=pl.String)
            scored = decide(scored.with_columns(s), pl.col("_d").is_not_null(), reason, pl.col("_d")).drop("_d")
        return scored

    def _check(self, found: _Found, label: str, text: str, messages: list[dict[str, Any]], meta: dict[str, Any]) -> None:
        cfg = self.config
        if not text.strip():
            if cfg.empty_reasoning and not declared_non_thinking(messages, meta):
                found.note("empty_reasoning", f"{label}: empty reasoning")
            return
        share, n = repeated_paragraphs(text, cfg.min_paragraph_words)
        repeats, sentence = most_repeated_sentence(text, cfg.min_sentence_words)
        if found.share is None:
            found.share, found.repeats = share, repeats
        limit = cfg.max_repeated_paragraph_share
        if limit is not None and share > limit:
            found.note("reasoning_loop", f"{label}: {share} of {n} paragraphs repeat")
        if cfg.max_sentence_repeats is not None and repeats > cfg.max_sentence_repeats:
            found.note("reasoning_loop", f"{label}: a sentence {repeats} times: {sentence[:60]!r}")

    def _languages(self, found: list[_Found], columns: list[str], frame: pl.DataFrame) -> None:
        """Identify every long paragraph of every reasoning in one batch; the main language is the one most of
        the identified text is in, the switch share the rest's (counting confident identifications only)."""
        cfg = self.config
        owners, texts = [], []
        for col in columns:
            label = "response" if col == "messages" else col
            for i, text in enumerate(frame.select(final_reasoning(frame, col)).to_series().to_list()):
                for p in _PARAGRAPH.split(text or ""):
                    if sum(ch.isalpha() for ch in p) >= cfg.language_min_letters:
                        owners.append((i, label))
                        texts.append(p)
        if self._lid is None:
            self._lid = LanguageID({"max_chars": 1000})
        langs, scores = self._lid.identify(texts)
        per: dict[tuple[int, str], Counter[str]] = {}
        for owner, text, lang, score in zip(owners, texts, langs, scores):
            per.setdefault(owner, Counter())[lang if score >= cfg.language_min_score else "?"] += len(text)
        for (i, label), chars in per.items():
            total = sum(chars.values())
            main = max((lang for lang in chars if lang != "?"), key=lambda lang: (chars[lang], lang), default="?")
            others = {lang: n for lang, n in chars.items() if lang not in (main, "?")}
            switch = round(sum(others.values()) / total, 4)
            if found[i].switch is None:
                found[i].lang, found[i].switch = main, switch
            if switch > cfg.max_language_switch:  # type: ignore[operator]
                top = ", ".join(sorted(others, key=lambda lang: (-others[lang], lang)))
                found[i].note("language_switch", f"{label}: {switch} not in {main} ({top})")

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        return {
            "repeated_paragraph_share": histogram(scored["repeated_paragraph_share"], bins=20, range_=(0.0, 1.0)),
            "max_sentence_repeats": histogram(scored["max_sentence_repeats"], bins=20),
            "language_switch_share": histogram(scored["language_switch_share"], bins=20, range_=(0.0, 1.0)),
        }
