"""Decontamination against evaluation sets: a row is contaminated when its text shares a word n-gram (default
13, the GPT-3 paper's choice) with an evaluation prompt, or equals one after normalization.

    DecontamConfig(evals=["gsm8k", "mt_bench", {"path": "my_eval.csv", "field": "Question"}])

Bare names select the sets bundled with alignmix (alignmix/filters/evals/SOURCES.md); a dict selects your own
file, folder or dataset (see `evalsets`). Both sides are checked turn by turn: every user turn of a row (by
default; `field` picks one text instead) against every turn of a multi-turn item (MT-Bench's `turns`).

Writes `contam_match` (the evaluation item, "<set>#<item>" counting from 0, null when clean). Reason
`contaminated`, detail: "gsm8k#17: equal after normalization", "gsm8k#17: 13-gram 'natalia sold clips to 48
...'", for a multi-turn item "mt_bench#3 turn 2: 13-gram '...'", and "... (user turn 1 of 3)" when the row has
several user turns.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import Field, field_validator

from alignmix.filters.evalsets import EvalSet, read_eval_items, resolve
from alignmix.filters.minhash import word_lists
from alignmix.filters.normalize import TextField, text_expr
from alignmix.pipeline.schema import normalize_text, row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, keep_all

# Every bundled set: what `decontam` checks when a recipe names none (`arena_hard` is both versions).
DEFAULT_EVALS = ["gsm8k", "ifeval", "mt_bench", "alpaca_eval", "humaneval", "truthfulqa", "arena_hard"]


class DecontamConfig(StageConfig):
    evals: list[EvalSet | str] = Field(
        default_factory=lambda: list(DEFAULT_EVALS),
        description="the evaluation sets to check against: bundled names (gsm8k, ifeval, mt_bench, alpaca_eval, "
        "humaneval, truthfulqa, arena_hard, ...) and/or {path|hf: ..., field: ..., name: ...}; default: every "
        "bundled set",
    )
    # user_turns by default: a multi-turn row trains on every user turn, and `prompt` is only one of them (the
    # last for preference rows, the first for SFT and prompt rows). On the real HH-RLHF test sample, `prompt`
    # finds 10 rows that open or close with an AlpacaEval prompt, user_turns 29.
    field: TextField | Literal["user_turns"] = Field(
        "user_turns", description="the row text compared: user_turns (every user turn, each on its own), or one "
        "text: prompt, first_user, conversation, ...")
    ngram: int = Field(13, ge=1, description="words in a shared n-gram that mark contamination")

    @field_validator("evals")
    @classmethod
    def _known(cls, evals: list[EvalSet | str]) -> list[EvalSet | str]:
        resolve(evals)  # unknown bundled names and clashing set names fail here, before any row is read
        return evals


class EvalIndex:
    """Every word n-gram and normalized text of the evaluation prompts, mapped to the first item holding it.

    Items are (set, item, turn) with turn None for a single-turn item; `sizes` is items per set.
    """

    def __init__(self, sets: list[EvalSet], ngram: int):
        self.ngram = ngram
        self.items: list[tuple[str, str | None]] = []  # (label "<set>#<i>", "turn <k>" or None)
        self.grams: dict[tuple[str, ...], int] = {}
        self.exact: dict[str, int] = {}
        self.sizes: dict[str, int] = {}
        for spec in sets:
            name = spec.label
            prompts = read_eval_items(spec)
            self.sizes[name] = len(prompts)
            texts = []
            for i, turns in enumerate(prompts):
                for k, text in enumerate(turns, start=1):
                    self.items.append((f"{name}#{i}", f"turn {k}" if len(turns) > 1 else None))
                    texts.append(text)
            first = len(self.items) - len(texts)
            for j, (text, w) in enumerate(zip(texts, word_lists(texts)), start=first):
                key = normalize_text(text)
                if not key:
                    continue  # a blank turn: it would match every blank row
                self.exact.setdefault(key, j)
                for k in range(len(w) - ngram + 1):
                    self.grams.setdefault(tuple(w[k : k + ngram]), j)

    def _where(self, j: int) -> str:
        label, turn = self.items[j]
        return f"{label} {turn}" if turn else label

    def match(self, text: str, w: list[str]) -> tuple[str, str] | None:
        """(eval item, how) for the first match of `text` (whose words are `w`), or None."""
        j = self.exact.get(normalize_text(text))
        if j is not None:
            return self.items[j][0], f"{self._where(j)}: equal after normalization"
        n = self.ngram
        for k in range(len(w) - n + 1):
            gram = tuple(w[k : k + n])
            j = self.grams.get(gram)
            if j is not None:
                return self.items[j][0], f"{self._where(j)}: {n}-gram '{' '.join(gram)}'"
        return None


# Built indexes, shared by the stage's copies: each parallel shard worker (`Stage.fresh`) would otherwise read
# and index every set again. An index is read-only once built, so threads may share it.
_INDEXES: dict[Any, EvalIndex] = {}
_INDEXES_LOCK = threading.Lock()


def _identity(spec: EvalSet) -> tuple[Any, ...]:
    """What a set's index depends on: its spec, and the size and mtime of a local file (like make)."""
    path = Path(spec.path) if spec.path is not None else None
    stat = path.stat() if path is not None and path.is_file() else None
    return (spec.model_dump_json(), stat.st_size if stat else None, stat.st_mtime_ns if stat else None)


def eval_index(sets: list[EvalSet], ngram: int) -> EvalIndex:
    """The index of `sets`, built once per process for the same sets and files."""
    key = (tuple(_identity(s) for s in sets), ngram)
    with _INDEXES_LOCK:
        if key not in _INDEXES:
            if len(_INDEXES) >= 4:
                _INDEXES.clear()
            _INDEXES[key] = EvalIndex(sets, ngram)
        return _INDEXES[key]


def user_turns(kind: str) -> pl.Expr:
    """Every user turn's content, as a list per row (of `chosen` for preference rows, else of `messages`)."""
    conv = "chosen" if kind == "preference" else "messages"
    user = pl.element().struct.field("role") == "user"
    return pl.col(conv).list.eval(pl.element().filter(user).struct.field("content"))


def _match_turns(index: EvalIndex, rows: list[list[str] | None]) -> list[tuple[str, str] | None]:
    """The first match among each row's user turns; the detail names the turn when the row has several."""
    flat = [t or "" for turns in rows for t in turns or ()]
    flat_words = iter(word_lists(flat))
    texts = iter(flat)
    out: list[tuple[str, str] | None] = []
    for turns in rows:
        found = None
        for k in range(1, len(turns or ()) + 1):
            m = index.match(next(texts), next(flat_words))
            if m is not None and found is None:
                found = (m[0], f"{m[1]} (user turn {k} of {len(turns)})" if len(turns) > 1 else m[1])
        out.append(found)
    return out


class Decontaminate(Stage[DecontamConfig]):
    """Drop rows whose prompt overlaps an evaluation prompt: `contaminated`, with the matched item."""

    name = "decontam"
    config_class = DecontamConfig

    def __init__(self, config: DecontamConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._index: EvalIndex | None = None

    def load(self) -> EvalIndex:
        if self._index is None:
            self._index = eval_index(resolve(self.config.evals), self.config.ngram)
        return self._index

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        index = self.load()
        kind = row_kind(frame)
        if self.config.field == "user_turns":
            matches = _match_turns(index, frame.select(user_turns(kind)).to_series().to_list())
        else:
            texts = frame.select(text_expr(self.config.field, kind)).to_series().to_list()
            matches = [index.match(t, w) for t, w in zip(texts, word_lists(texts))]
        scored = keep_all(frame).with_columns(
            pl.Series("contam_match", [m[0] if m else None for m in matches], dtype=pl.String),
            pl.Series("_how", [m[1] if m else None for m in matches], dtype=pl.String),
        )
        return decide(scored, pl.col("contam_match").is_not_null(), "contaminated", pl.col("_how")).drop("_how")

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        sets = scored["contam_match"].drop_nulls().str.split("#").list.first().value_counts(sort=True)
        return {
            "contaminated_by_set": {name: int(n) for name, n in sets.iter_rows()},
            "eval_items_by_set": dict(self.load().sizes),
        }
