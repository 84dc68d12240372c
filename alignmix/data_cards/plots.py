"""The card's plots, as PNG files drawn with matplotlib (Agg, no display) from recorded statistics only.

Every histogram comes in stage.histogram()'s format ({"edges", "counts", "n", ...}), so one function draws
the length, score and margin histograms of the mix as well as whatever distributions a filter recorded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from alignmix.pipeline.topics import CATEGORIES, CATEGORY_NAMES  # noqa: E402

DPI = 96
COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def is_histogram(value: Any) -> bool:
    return isinstance(value, dict) and {"edges", "counts", "n"} <= set(value)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No timestamps or software tags in the file, so the same stats give the same bytes.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _hist_axes(ax: Any, hist: dict[str, Any], title: str, color: str) -> None:
    edges, counts = hist["edges"], hist["counts"]
    if counts:
        widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color=color, edgecolor="white", linewidth=0.5)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
    subtitle = f"n={hist['n']}" + (f", median={hist['p50']:g}" if hist.get("p50") is not None else "")
    ax.set_title(f"{title}\n{subtitle}", fontsize=9)
    ax.tick_params(labelsize=7)


def histograms_png(hists: dict[str, dict[str, Any]], path: Path, xlabels: dict[str, str] | None = None) -> Path:
    """One panel per histogram, side by side."""
    names = list(hists)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 2.6), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes[0], names)):
        _hist_axes(ax, hists[name], name.replace("_", " "), COLORS[i % len(COLORS)])
        if xlabels and name in xlabels:
            ax.set_xlabel(xlabels[name], fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def funnel_png(funnel: list[dict[str, Any]], path: Path) -> Path:
    labels = [s["stage"] for s in funnel]
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(labels)))
    y = list(range(len(labels)))[::-1]
    ax.barh(y, [s["rows_in"] for s in funnel], color="#dddddd", label="rows in")
    ax.barh(y, [s["rows_kept"] for s in funnel], color=COLORS[0], label="rows kept / drawn")
    ax.set_yticks(y, labels, fontsize=8)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / len(labels)))
    ax.set_title("rows through every stage", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def topics_png(by_source: dict[str, dict[str, int]], mix: dict[str, int], path: Path) -> Path:
    """Stacked shares of each category, one bar per source and one for the whole mix."""
    rows = {**by_source, "(mix)": mix}
    names = list(rows)
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * len(names)))
    y = list(range(len(names)))[::-1]
    left = [0.0] * len(names)
    for i, cat in enumerate(CATEGORIES):
        shares = [(rows[n].get(cat, 0) / max(1, sum(rows[n].values()))) for n in names]
        ax.barh(y, shares, left=left, color=COLORS[i % len(COLORS)], label=CATEGORY_NAMES[cat])
        left = [a + b for a, b in zip(left, shares)]
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of rows", fontsize=8)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("topic coverage", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def counts_png(counts: dict[str, int], path: Path, title: str) -> Path:
    items = list(counts.items())[:20]
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.3 * len(items)))
    y = list(range(len(items)))[::-1]
    values = [v for _, v in items]
    ax.barh(y, values, color=COLORS[2])
    ax.set_yticks(y, [k for k, _ in items], fontsize=8)
    if values and max(values) > 50 * max(1, min(values)):
        ax.set_xscale("log")  # one dominant value (English, usually) would hide all the others
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def rounds_png(rounds: list[dict[str, Any]], path: Path) -> Path:
    """Iterative DPO per round: pairs kept; held-out reward accuracy and win rate; answer lengths (round 0: the
    start policy's held-out answers); the kept pairs' mean score margin."""
    ks = [r["round"] for r in rounds]
    fig, axes = plt.subplots(1, 4, figsize=(12.8, 2.6))
    axes[0].bar(ks, [r["pairs"]["rows"] for r in rounds], color=COLORS[0])
    axes[0].set_title("pairs kept", fontsize=9)
    for i, (label, values) in enumerate((
        ("held-out reward accuracy", [r["heldout"]["after"].get("reward_accuracy") for r in rounds]),
        ("win rate over previous", [r["win_rate"].get("win_rate") for r in rounds]),
    )):
        axes[1].plot(ks, [float("nan") if v is None else v for v in values], "o-", color=COLORS[i + 1], label=label)
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].legend(fontsize=7)
    axes[1].set_title("held-out accuracy and win rate", fontsize=9)
    held = [rounds[0]["win_rate"].get("previous_chars")] + [r["win_rate"].get("new_chars") for r in rounds]
    axes[2].plot([0, *ks], [float("nan") if v is None else v for v in held], "o-", color=COLORS[3],
                 label="held-out answers")
    axes[2].plot([k - 1 for k in ks], [r["samples"].get("mean_chars") or float("nan") for r in rounds], "s--",
                 color=COLORS[4], label="sampled answers")
    axes[2].legend(fontsize=7)
    axes[2].set_title("mean answer length (characters)\nof the policy after round x", fontsize=9)
    axes[3].bar(ks, [r["pairs"].get("margin_mean") or 0.0 for r in rounds], color=COLORS[2])
    axes[3].set_title("mean score margin of kept pairs", fontsize=9)
    for ax in axes:
        ax.set_xlabel("round", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_xticks([0, *ks] if ax is axes[2] else ks)
    axes[2].set_xlabel("policy after round", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def make_plots(card: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Draw every plot the card shows into `out_dir`; return {plot key: path}. Keys are stable names that the
    markdown and HTML renderers look up (`funnel`, `lengths`, `scores`, `topics`, `languages`, `stage:<name>`)."""
    mix = card["mix"]
    dist = mix.get("distributions", {})
    plots: dict[str, Path] = {}
    plots["funnel"] = funnel_png(mix["funnel"], out_dir / "funnel.png")
    lengths = {k: dist[k] for k in ("prompt_chars", "chosen_chars", "rejected_chars", "response_chars", "turns")
               if is_histogram(dist.get(k))}
    if "chosen_rejected_ratio" in dist:
        lengths["chosen_rejected_ratio"] = dist["chosen_rejected_ratio"]
    if lengths:
        plots["lengths"] = histograms_png(lengths, out_dir / "lengths.png",
                                          {"chosen_rejected_ratio": "log2(chosen chars / rejected chars)"})
    scores = {k: dist[k] for k in ("score_chosen", "score_rejected", "score_margin") if is_histogram(dist.get(k))}
    if any(h["n"] for h in scores.values()):
        plots["scores"] = histograms_png(scores, out_dir / "scores.png")
    cats = mix["mix"]["categories"]
    plots["topics"] = topics_png(cats["by_source"], cats["mix"], out_dir / "topics.png")
    if dist.get("languages"):
        plots["languages"] = counts_png(dist["languages"], out_dir / "languages.png", "languages in the mix")
    if card.get("rounds"):
        plots["rounds"] = rounds_png(card["rounds"], out_dir / "rounds.png")
    for stage, stats in card["stages"].items():
        hists = {k: v for k, v in stats.get("distributions", {}).items() if is_histogram(v) and v["n"]}
        if hists:
            plots[f"stage:{stage}"] = histograms_png(hists, out_dir / f"stage-{slug(stage)}.png")
    return plots
