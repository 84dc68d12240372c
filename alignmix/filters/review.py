"""The human spot check: does a person agree with the labels of a mix?

`alignmix review DIR --sample 50` shows random preference pairs from DIR's shards, blind: the two responses
appear as A and B in a random order. Each verdict (A better, B better, tie, unsure) is mapped back to
chosen_better / rejected_better / tie / unsure and appended to DIR/review/verdicts.jsonl; the summary goes to
DIR/review/summary.json. Agreement = chosen_better / (chosen_better + rejected_better + tie), unsure left
out. Below 80% the labels are not trustworthy, and the report says so.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import orjson
import polars as pl
from rich.console import Console
from rich.panel import Panel

from alignmix.pipeline.schema import row_kind
from alignmix.pipeline.store import MixStore, write_json

VERDICTS = ("chosen_better", "rejected_better", "tie", "unsure")
# 0.8: below this a person disagrees with one label in five, too many for a preference set to teach from.
MIN_AGREEMENT = 0.8
KEYS = {"a": "A", "b": "B", "t": "tie", "u": "unsure", "q": "quit"}


@dataclass
class ReviewReport:
    reviewed: int
    counts: dict[str, int] = field(default_factory=dict)
    agreement: float | None = None
    trustworthy: bool | None = None
    verdicts_path: str = ""

    def render(self) -> str:
        if self.agreement is None:
            return f"reviewed {self.reviewed} pairs; no verdict besides 'unsure', so no agreement rate"
        line = f"reviewed {self.reviewed} pairs; agreement with the labels {self.agreement:.0%} " + str(self.counts)
        if not self.trustworthy:
            line += f"\nwarning: agreement below {MIN_AGREEMENT:.0%}: these labels are not trustworthy"
        return line


def agreement(counts: dict[str, int]) -> float | None:
    """Share of decided verdicts that agree with the label: chosen_better / (chosen + rejected + tie)."""
    decided = counts.get("chosen_better", 0) + counts.get("rejected_better", 0) + counts.get("tie", 0)
    return round(counts.get("chosen_better", 0) / decided, 4) if decided else None


def sample_pairs(mix_dir: str | Path, n: int, seed: int = 0) -> pl.DataFrame:
    """n random preference rows of a mix (all of them when it has fewer), in a seed-fixed order."""
    frame = MixStore(mix_dir).read()
    if row_kind(frame) != "preference":
        raise ValueError(f"{mix_dir} holds SFT rows; the spot check compares chosen and rejected responses")
    return frame.sample(n=min(n, frame.height), seed=seed, shuffle=True)


def _response(conv: list[dict]) -> str:
    return conv[-1]["content"] if conv else ""


def review(
    mix_dir: str | Path,
    sample: int = 50,
    seed: int = 0,
    ask: Callable[[str], str] = input,
    console: Console | None = None,
) -> ReviewReport:
    """Run the spot check; `ask` reads one answer (tests pass a scripted function instead of `input`)."""
    console = console or Console()
    rows = sample_pairs(mix_dir, sample, seed)
    rng = random.Random(seed)
    out = Path(mix_dir) / "review"
    out.mkdir(parents=True, exist_ok=True)
    verdicts_path = out / "verdicts.jsonl"
    counts: Counter[str] = Counter()
    with verdicts_path.open("ab") as log:
        for k, row in enumerate(rows.iter_rows(named=True), 1):
            chosen_first = rng.random() < 0.5
            a, b = (row["chosen"], row["rejected"]) if chosen_first else (row["rejected"], row["chosen"])
            console.rule(f"pair {k} of {rows.height}  ·  {row['source']}  ·  {row['id'][:12]}")
            console.print(Panel(row["prompt"], title="prompt", border_style="cyan"))
            console.print(Panel(_response(a), title="A", border_style="green"))
            console.print(Panel(_response(b), title="B", border_style="magenta"))
            answer = ""
            while answer not in KEYS:
                answer = ask("which is better? [a] A  [b] B  [t] tie  [u] unsure  [q] quit: ").strip().lower()[:1]
            if KEYS[answer] == "quit":
                break
            picked = KEYS[answer]
            if picked in ("A", "B"):
                chose_chosen = (picked == "A") == chosen_first
                verdict = "chosen_better" if chose_chosen else "rejected_better"
            else:
                verdict = picked
            counts[verdict] += 1
            record = {
                "id": row["id"],
                "verdict": verdict,
                "shown_first": "chosen" if chosen_first else "rejected",
                "seed": seed,
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            log.write(orjson.dumps(record) + b"\n")
            log.flush()
    rate = agreement(counts)
    report = ReviewReport(
        reviewed=sum(counts.values()),
        counts={v: counts.get(v, 0) for v in VERDICTS},
        agreement=rate,
        trustworthy=None if rate is None else rate >= MIN_AGREEMENT,
        verdicts_path=str(verdicts_path),
    )
    write_json(out / "summary.json", asdict(report) | {"min_agreement": MIN_AGREEMENT})
    return report
