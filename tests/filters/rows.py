"""Designed rows (built with schema.preference_row / sft_row) and a small loader of the real files in
../shared/data through the project's format adapters, for the filter tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.schema import preference_row, sft_row, to_frame


def pref(i: int | str, chosen: str, rejected: str, *, prompt: str | None = None, sc=None, sr=None, meta=None, source="t") -> dict:
    prompt = prompt if prompt is not None else f"prompt number {i}"
    user = {"role": "user", "content": prompt}
    return preference_row(
        prompt,
        [user, {"role": "assistant", "content": chosen}],
        [user, {"role": "assistant", "content": rejected}],
        score_chosen=sc,
        score_rejected=sr,
        source=source,
        source_id=str(i),
        meta=meta,
    )


def sft(i: int | str, user: str, assistant: str, *, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]
    return sft_row(msgs, source="t", source_id=str(i))


def prefs(*rows: dict) -> pl.DataFrame:
    return to_frame(list(rows), "preference")


def sfts(*rows: dict) -> pl.DataFrame:
    return to_frame(list(rows), "sft")


def by_source_id(frame: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """{source_id: (drop_reason, drop_detail)} of a rejected frame."""
    return {s: (r, d) for s, r, d in frame.select("source_id", "drop_reason", "drop_detail").iter_rows()}


def jsonl(path: Path) -> list[dict[str, Any]]:
    # Split on "\n" only: some strings hold U+2028 (see SOURCES.md).
    return [orjson.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


def load_file(path: Path, fmt: str, source: str) -> tuple[pl.DataFrame, dict[int, str]]:
    """Rows of a real JSON Lines file through the project's format adapter (pipeline.adapters), and
    {record index: reason} for the records the adapter rejects."""
    from alignmix.pipeline.adapters import get_adapter
    from alignmix.pipeline.schema import RowError

    adapter = get_adapter(fmt)
    rows, errors = [], {}
    for i, record in enumerate(jsonl(path)):
        try:
            rows.extend(adapter.convert(record, source=source, source_id=str(i)))
        except RowError as err:
            errors[i] = err.reason
    return to_frame(rows, adapter.kind), errors


def load_ultrafeedback(shared: Path) -> tuple[pl.DataFrame, dict[int, str]]:
    return load_file(shared / "ultrafeedback" / "eval_clean.jsonl", "pairs", "ultrafeedback")


def load_hh(shared: Path) -> tuple[pl.DataFrame, dict[int, str]]:
    return load_file(shared / "hh_rlhf" / "test_prefs.jsonl", "hh_rlhf", "hh_rlhf")
