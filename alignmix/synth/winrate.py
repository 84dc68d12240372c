"""A judge's win rate of one policy over another: both answer the same prompts (same seeds), the judge rates
every answer, and per prompt the higher rating wins, a tie counting one half. What iterative DPO records for each
round (the new policy against the previous one, on held-out prompts), with whichever judge the recipe configures.

    >>> stats = compare_policies(["Name a river."], {"responders": [{"label": "before"}, {"label": "after",
    ...     "backend_options": {"adapter": "runs/dpo/adapter"}}], "judge": {"rating": "expected"}}, "out/answers")
    ...                                                                                  # doctest: +SKIP
    >>> stats["win_rate"]                                                                # doctest: +SKIP
    0.625

The spec is a `preferences` spec with exactly two responders of one answer each: index 0 the baseline, index 1
the candidate. When both give the same text, the responses stage keeps one (`duplicate_response`): a tie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.store import MixStore
from alignmix.synth.batches import stage_rows
from alignmix.synth.config import PreferencesConfig
from alignmix.synth.judge import judge_responses
from alignmix.synth.responses import generate_responses


def compare_policies(prompts: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path) -> dict[str, Any]:
    """Answers from both responders of `spec` to `prompts`, rated by its judge (resumable, in `out_dir`); the win
    rate of responder 1 over responder 0 with the counts behind it and both sides' mean answer length."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    if [r.n for r in cfg.responders] != [1, 1]:
        raise ValueError("compare_policies: give exactly two responders with n: 1 (the baseline, then the candidate)")
    generate_responses(prompts, cfg, out_dir, write_data=False)
    judge_responses(out_dir, cfg, out_dir, write_data=False)
    rated = stage_rows(out_dir, "judge")
    rejected = MixStore(out_dir).read_rejected()
    duplicates = []
    if rejected.height:
        same = rejected.filter(pl.col("drop_reason") == "duplicate_response")
        duplicates = [orjson.loads(m)["prompt_id"] for m in same["meta"].to_list()]
    return win_rate(rated if rated is not None else pl.DataFrame({"meta": [], "messages": []}), duplicates)


def _rating(meta: str) -> tuple[str, int, float | None]:
    m = orjson.loads(meta)
    return m["prompt_id"], int(m["response_index"]), (m.get("judge") or {}).get("rating")


def win_rate(rated: pl.DataFrame, duplicates: list[str]) -> dict[str, Any]:
    """The win rate of answer 1 over answer 0 per prompt, a tie counting one half, from the judge's rows (meta
    with prompt_id, response_index and judge.rating). `duplicates`: prompt ids whose two answers were the same
    text, a tie. A prompt with an unrated or missing answer is counted as `unrated`, not scored.

    >>> meta = lambda p, i, r: orjson.dumps({"prompt_id": p, "response_index": i, "judge": {"rating": r}}).decode()
    >>> turn = lambda text: [{"role": "assistant", "content": text}]
    >>> rows = pl.DataFrame({"meta": [meta("a", 0, 2.0), meta("a", 1, 4.0), meta("b", 0, 3.0), meta("b", 1, None),
    ...                               meta("c", 0, 3.0)],
    ...                      "messages": [turn("no"), turn("yes!"), turn("hm"), turn("?"), turn("same")]})
    >>> r = win_rate(rows, ["c"])
    >>> (r["wins"], r["ties"], r["losses"], r["unrated"], r["win_rate"], r["previous_chars"], r["new_chars"])
    (1, 1, 0, 1, 0.75, 2.666667, 3.0)
    """
    by_prompt: dict[str, dict[int, float | None]] = {}
    chars: dict[str, dict[int, int]] = {}
    for meta, messages in rated.select("meta", "messages").iter_rows():
        pid, index, rating = _rating(meta)
        by_prompt.setdefault(pid, {})[index] = rating
        chars.setdefault(pid, {})[index] = len(messages[-1]["content"])
    wins = ties = losses = unrated = 0
    for pid in duplicates:  # the new answer is the previous one's text
        by_prompt.pop(pid, None)
        if 0 in chars.get(pid, {}):
            chars[pid][1] = chars[pid][0]
        ties += 1
    for answers in by_prompt.values():
        old, new = answers.get(0), answers.get(1)
        if old is None or new is None:
            unrated += 1
        elif new > old:
            wins += 1
        elif new < old:
            losses += 1
        else:
            ties += 1
    scored = wins + ties + losses
    return {
        "prompts": scored + unrated, "wins": wins, "ties": ties, "losses": losses, "unrated": unrated,
        "win_rate": round((wins + 0.5 * ties) / scored, 6) if scored else None,
        "previous_chars": _mean([c[0] for c in chars.values() if 0 in c]),
        "new_chars": _mean([c[1] for c in chars.values() if 1 in c]),
    }


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None
