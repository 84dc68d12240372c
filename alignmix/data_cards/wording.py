"""The card's sentences: numbers and names in, plain English out. Nothing here knows about blocks or layout,
and nothing prints a Python dict or list repr.

    >>> reasons({"score_tie": 25, "length_ratio": 17})
    'length_ratio 17, score_tie 25'
    >>> plain({"unit": "words", "evals": [{"path": "gsm8k.jsonl", "field": "question"}], "tokenizer": None})
    'unit: words, evals: [path: gsm8k.jsonl, field: question], tokenizer: none'
"""

from __future__ import annotations

from typing import Any

# The course's corpus-level rule: a chosen/rejected mean length ratio beyond 2x (either way) is suspect, and so
# is a label that picks the longer response in fewer than 40% or more than 60% of pairs.
MAX_MEAN_RATIO = 2.0
SHARE_BAND = (0.40, 0.60)


def reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{r} {n}" for r, n in sorted(dropped.items())) or "-"


def plain(value: Any) -> str:
    """A config or record value as text: `key: value` pairs, lists in brackets, None as 'none'."""
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {plain(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(plain(v) for v in value) + "]"
    return str(value)


def percent(share: float | None) -> str:
    """0.4615 -> '46.2%'; None (no pair whose lengths differ) -> 'n/a'."""
    return "n/a" if share is None else f"{100 * share:.1f}%"


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def about(kind: str, total: int, sources: int, version: str, recipe: str, seed: int, recipe_hash: str) -> str:
    return (
        f"A {kind} mix of {total} rows from {sources} sources, built by alignmix {version} from the recipe "
        f"`{recipe}` with seed {seed} (recipe sha256 {recipe_hash[:16]}…). The same recipe and seed give "
        "byte-identical shards."
    )


def stage_line(name: str, stats: dict[str, Any]) -> str:
    return (f"{name}: {stats['rows_in']} rows in, {stats['rows_kept']} kept, dropped "
            f"{reasons(stats.get('dropped', {}))}; config: {plain(stats.get('config', {}))}.")


def mix_length_line(share: float, log2_ratio_median: Any) -> str:
    return (
        f"Chosen responses are longer than rejected ones in {100 * share:.1f}% of pairs; "
        f"the median log2 ratio of chosen to rejected length is {log2_ratio_median} "
        "(0: same length; a long positive tail is the length bias a DPO model learns)."
    )


# --- length bias ----------------------------------------------------------------------------------------------


def length_bias_statement(stage: str, unit: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """The corpus ratio and share before and after a length stage, in one sentence.

    >>> before = {"pairs": 175, "ratio_of_means": 1.0374, "share_chosen_longer": 0.4615}
    >>> after = {"pairs": 142, "ratio_of_means": 0.9988, "share_chosen_longer": 0.4853}
    >>> print(length_bias_statement("length", "words", before, after))  # doctest: +NORMALIZE_WHITESPACE
    Chosen/rejected ratio of mean lengths (words): 1.0374 before the length stage (175 pairs), 0.9988 after
    (142 pairs); chosen is the longer response in 46.2% of pairs before and 48.5% after (pairs of equal length
    count on neither side).
    """
    return (
        f"Chosen/rejected ratio of mean lengths ({unit}): {number(before.get('ratio_of_means'))} before the {stage} "
        f"stage ({before['pairs']} pairs), {number(after.get('ratio_of_means'))} after ({after['pairs']} pairs); "
        f"chosen is the longer response in {percent(before.get('share_chosen_longer'))} of pairs before and "
        f"{percent(after.get('share_chosen_longer'))} after (pairs of equal length count on neither side)."
    )


def length_bias_warnings(when: str, ratio_of_means: float | None, share: float | None) -> list[str]:
    """Warnings for a corpus whose mean length ratio is beyond 2x either way, or whose share of pairs with the
    longer chosen lies outside 40-60%; `when` says which corpus ('before the length stage', 'in the mix').

    >>> for line in length_bias_warnings("in the mix", 2.4, 0.71): print(line)  # doctest: +NORMALIZE_WHITESPACE
    Warning: in the mix, chosen responses are 2.4x as long as rejected ones on average (ratio of mean lengths
    above 2): a model trained on these pairs learns that longer is better.
    Warning: in the mix, chosen is the longer response in 71.0% of pairs, outside 40-60%: the label follows length.
    >>> length_bias_warnings("after the length stage", 1.1, 0.5)
    []
    """
    out = []
    if ratio_of_means is not None and ratio_of_means > MAX_MEAN_RATIO:
        out.append(f"Warning: {when}, chosen responses are {ratio_of_means:g}x as long as rejected ones on average "
                   f"(ratio of mean lengths above {MAX_MEAN_RATIO:g}): a model trained on these pairs learns that "
                   "longer is better.")
    elif ratio_of_means is not None and 0 < ratio_of_means < 1 / MAX_MEAN_RATIO:
        out.append(f"Warning: {when}, rejected responses are {1 / ratio_of_means:.3g}x as long as chosen ones on "
                   f"average (ratio of mean lengths below 1/{MAX_MEAN_RATIO:g}): a model trained on these pairs "
                   "learns that shorter is better.")
    low, high = SHARE_BAND
    if share is not None and not low <= share <= high:
        out.append(f"Warning: {when}, chosen is the longer response in {percent(share)} of pairs, outside "
                   f"{100 * low:.0f}-{100 * high:.0f}%: the label follows length.")
    return out


def length_bias_actions(record: dict[str, Any], dropped: dict[str, int]) -> str:
    """What the length stage did about the bias, with its thresholds."""
    parts = []
    ratio = record.get("max_length_ratio")
    if ratio is not None:
        parts.append(f"{dropped.get('length_ratio', 0)} abnormal pairs dropped (one response more than {ratio:g}x "
                     f"the other and at least {record.get('min_length_gap')} {record.get('unit')} longer)")
    if record.get("balance") and record.get("balanced") is False:
        parts.append(f"no balancing ({record['before'].get('pairs')} pairs are too few to tell a bias from chance)")
    elif record.get("balance"):
        tol = record.get("tolerance", 0.0)
        parts.append(f"{dropped.get('length_balance', 0)} pairs subsampled away where a bucket's share lay outside "
                     f"{100 * (0.5 - tol):.0f}-{100 * (0.5 + tol):.0f}%")
    else:
        parts.append("no balancing (balance: false)")
    return ("The stage's actions: " + "; ".join(parts) + ". Buckets are quantiles of a pair's mean length over "
            "the stage's input; the same buckets are used after it.")


# --- iterative DPO rounds -----------------------------------------------------------------------------------

# Length drift, the known failure of iterative DPO: answers that grow round after round (the judge rewarding
# length). Past this growth of the held-out answers' mean length over the start policy's, the card warns.
MAX_LENGTH_DRIFT = 1.5


def round_summary(record: dict[str, Any]) -> str:
    """One round in a sentence: what it sampled from, what it kept, how far DPO moved it and how it fared.

    >>> print(round_summary({"round": 2, "sampled_from": "out/x/rounds/round-1/adapter", "pairs": {"rows": 3},
    ...     "train": {"steps": 4}, "heldout": {"pairs": 2, "before": {"reward_accuracy": 0.5},
    ...     "after": {"reward_accuracy": 1.0}}, "win_rate": {"win_rate": 0.75, "wins": 1, "ties": 1, "losses": 0,
    ...     "missing": 0}}))  # doctest: +NORMALIZE_WHITESPACE
    Round 2 sampled from out/x/rounds/round-1/adapter, kept 3 pairs after pairing and curation, and trained 4 DPO
    steps from round 1's adapter (reference: the start model). Held-out reward accuracy: 0.5 before, 1 after
    (2 pairs). Win rate over the policy before the round: 0.75 (1 wins, 1 ties, 0 losses; 0 prompts without both
    answers).
    """
    held, wins, k = record["heldout"], record["win_rate"], record["round"]
    start = "the start model" if k == 1 else f"round {k - 1}'s adapter"
    return (
        f"Round {k} sampled from {record['sampled_from']}, kept {record['pairs']['rows']} pairs after "
        f"pairing and curation, and trained {record['train'].get('steps')} DPO steps from {start} "
        f"(reference: the start model). Held-out reward accuracy: "
        f"{number(held['before'].get('reward_accuracy'))} before, {number(held['after'].get('reward_accuracy'))} "
        f"after ({held['pairs']} pairs). Win rate over the policy before the round: {number(wins.get('win_rate'))} "
        f"({wins['wins']} wins, {wins['ties']} ties, {wins['losses']} losses; {wins.get('missing', 0)} prompts without "
        "both answers)."
    )


def length_drift_warning(start_chars: float | None, round_chars: float | None, k: int) -> str | None:
    """A warning when round k's held-out answers are over MAX_LENGTH_DRIFT times as long as the start policy's.

    >>> length_drift_warning(100.0, 180.0, 3)  # doctest: +NORMALIZE_WHITESPACE
    "Warning: after round 3 the policy's held-out answers are 1.8x as long as the start policy's (180 vs 100
    characters): length drift, the judge may be rewarding length."
    >>> length_drift_warning(100.0, 120.0, 3) is None
    True
    """
    if not start_chars or round_chars is None or round_chars <= MAX_LENGTH_DRIFT * start_chars:
        return None
    return (f"Warning: after round {k} the policy's held-out answers are {round_chars / start_chars:.2g}x as long as "
            f"the start policy's ({round_chars:g} vs {start_chars:g} characters): length drift, the judge may be "
            "rewarding length.")
