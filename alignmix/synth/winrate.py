"""A judge's win rate of one policy over another: both answer the same prompts with the same seeds, and the judge
decides each prompt head to head (`make_judge(...).outcomes`: the LLM judge asks A/B in both orders, a reward model
compares scores; a tie counts one half). What iterative DPO records for each round, the new policy against the
previous one on held-out prompts, with whichever judge the recipe configures.

    >>> stats = compare_policies(["Name a river."], {"responders": [{"label": "before"}, {"label": "after",
    ...     "backend_options": {"adapter": "runs/dpo/adapter"}}], "judge": {"kind": "llm"}}, "out/answers")
    ...                                                                                  # doctest: +SKIP
    >>> stats["win_rate"]                                                                # doctest: +SKIP
    0.625

The spec is a `preferences` spec with exactly two responders of one answer each: index 0 the baseline, index 1
the candidate. When both give the same text, the responses stage keeps one (`duplicate_response`): the judge then
sees two equal answers, a tie.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.store import MixStore
from alignmix.synth.batches import stage_rows
from alignmix.synth.config import PreferencesConfig
from alignmix.synth.judge import make_judge, win_rate
from alignmix.synth.responses import generate_responses


def compare_policies(prompts: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path) -> dict[str, Any]:
    """Answers from both responders of `spec` to `prompts` (resumable, in `out_dir`), judged head to head by its
    judge: the win rate of responder 1 over responder 0, the counts behind it, the prompts without both answers
    (`missing`: an empty answer) and both sides' mean answer length in characters."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    if [r.n for r in cfg.responders] != [1, 1]:
        raise ValueError("compare_policies: give exactly two responders with n: 1 (the baseline, then the candidate)")
    generate_responses(prompts, cfg, out_dir, write_data=False)
    answers = paired_answers(stage_rows(out_dir, "responses"), MixStore(out_dir).read_rejected())
    items = [(a["prompt"], a[1], a[0]) for a in answers.values() if 0 in a and 1 in a]
    outcomes = make_judge(cfg.judge).outcomes(items) if items else []
    return {
        **win_rate(outcomes),
        "missing": len(answers) - len(items),
        "previous_chars": _mean([len(a[0]) for a in answers.values() if 0 in a]),
        "new_chars": _mean([len(a[1]) for a in answers.values() if 1 in a]),
    }


def paired_answers(responses: pl.DataFrame | None, rejected: pl.DataFrame) -> dict[str, dict[Any, str]]:
    """Per prompt id: the instruction (`prompt`) and each responder's answer by response index. An answer the
    responses stage rejected as a duplicate is the other answer's text.

    >>> turns = lambda text: [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": text}]
    >>> meta = lambda i: orjson.dumps({"prompt_id": "p", "response_index": i}).decode()
    >>> rows = pl.DataFrame({"messages": [turns("Hello.")], "meta": [meta(0)]})
    >>> dup = pl.DataFrame({"meta": [meta(1)], "drop_reason": ["duplicate_response"]})
    >>> paired_answers(rows, dup)
    {'p': {'prompt': 'Hi?', 0: 'Hello.', 1: 'Hello.'}}
    """
    out: dict[str, dict[Any, str]] = {}
    for messages, meta in (responses.select("messages", "meta").iter_rows() if responses is not None else []):
        m = orjson.loads(meta)
        out.setdefault(m["prompt_id"], {"prompt": messages[-2]["content"]})[m["response_index"]] = messages[-1]["content"]
    if rejected.height:
        for meta in rejected.filter(pl.col("drop_reason") == "duplicate_response")["meta"].to_list():
            m = orjson.loads(meta)
            kept = out.get(m["prompt_id"], {})
            if 1 - m["response_index"] in kept:
                kept[m["response_index"]] = kept[1 - m["response_index"]]
    return out


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 6) if values else None
