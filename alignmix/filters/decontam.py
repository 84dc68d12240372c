"""Decontamination against evaluation sets: a row is contaminated when its text shares a word n-gram (default
13, the GPT-3 paper's choice) with an evaluation prompt, or equals one after normalization.

    DecontamConfig(evals=[{"path": "gsm8k_test.jsonl", "field": "question"}])

Writes `contam_match` (the evaluation item, "<set>#<row>", null when clean). Reason `contaminated`, detail:
"gsm8k_test#17: equal after normalization" or "gsm8k_test#17: 13-gram 'natalia sold clips to 48 ...'".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from alignmix.filters.minhash import word_lists
from alignmix.filters.normalize import TextField, text_expr
from alignmix.pipeline.schema import normalize_text, row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, keep_all


class EvalSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a JSON Lines, JSON or parquet file of evaluation items")
    field: str = Field("prompt", description="the field that holds each item's prompt")
    name: str | None = Field(None, description="the name recorded in matches (default: the file's stem)")


class DecontamConfig(StageConfig):
    evals: list[EvalSet] = Field(description="the evaluation sets to check against")
    field: TextField = Field("prompt", description="the row text compared: prompt, first_user, conversation, ...")
    ngram: int = Field(13, ge=1, description="words in a shared n-gram that mark contamination")


def read_eval_prompts(spec: EvalSet) -> list[str]:
    """The prompts of one evaluation file; errors name the file, the row and the field."""
    path = Path(spec.path)
    if not path.exists():
        raise FileNotFoundError(f"evaluation set {path} does not exist")
    if path.suffix == ".parquet":
        frame = pl.read_parquet(path)
        if spec.field not in frame.columns:
            raise ValueError(f"{path}: no column {spec.field!r}; columns are {frame.columns}")
        return [str(x) if x is not None else "" for x in frame[spec.field].to_list()]
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        items = orjson.loads(text)
    else:  # JSON Lines, split on "\n" only: some strings hold U+2028
        items = [orjson.loads(line) for line in text.split("\n") if line.strip()]
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get(spec.field), str):
            raise ValueError(f"{path}: row {i} has no string field {spec.field!r}; set `field` to the prompt's name")
        out.append(item[spec.field])
    return out


class EvalIndex:
    """Every word n-gram and normalized text of the evaluation prompts, mapped to the first item holding it."""

    def __init__(self, sets: list[EvalSet], ngram: int):
        self.ngram = ngram
        self.grams: dict[tuple[str, ...], str] = {}
        self.exact: dict[str, str] = {}
        for spec in sets:
            name = spec.name or Path(spec.path).stem
            prompts = read_eval_prompts(spec)
            for i, (prompt, w) in enumerate(zip(prompts, word_lists(prompts))):
                label = f"{name}#{i}"
                self.exact.setdefault(normalize_text(prompt), label)
                for k in range(len(w) - ngram + 1):
                    self.grams.setdefault(tuple(w[k : k + ngram]), label)

    def match(self, text: str, w: list[str]) -> tuple[str, str] | None:
        """(eval item, how) for the first match of `text` (whose words are `w`), or None."""
        label = self.exact.get(normalize_text(text))
        if label is not None:
            return label, "equal after normalization"
        n = self.ngram
        for k in range(len(w) - n + 1):
            gram = tuple(w[k : k + n])
            label = self.grams.get(gram)
            if label is not None:
                return label, f"{n}-gram '{' '.join(gram)}'"
        return None


class Decontaminate(Stage[DecontamConfig]):
    """Drop rows whose prompt overlaps an evaluation prompt: `contaminated`, with the matched item."""

    name = "decontam"
    config_class = DecontamConfig

    def __init__(self, config: DecontamConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._index: EvalIndex | None = None

    def load(self) -> EvalIndex:
        if self._index is None:
            self._index = EvalIndex(self.config.evals, self.config.ngram)
        return self._index

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        index = self.load()
        texts = frame.select(text_expr(self.config.field, row_kind(frame))).to_series().to_list()
        matches = [index.match(t, w) for t, w in zip(texts, word_lists(texts))]
        scored = keep_all(frame).with_columns(
            pl.Series("contam_match", [m[0] if m else None for m in matches], dtype=pl.String),
            pl.Series("_how", [f"{m[0]}: {m[1]}" if m else None for m in matches], dtype=pl.String),
        )
        return decide(scored, pl.col("contam_match").is_not_null(), "contaminated", pl.col("_how")).drop("_how")

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        sets = scored["contam_match"].drop_nulls().str.split("#").list.first().value_counts(sort=True)
        return {"contaminated_by_set": {name: int(n) for name, n in sets.iter_rows()}}
