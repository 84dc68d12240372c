"""One-screen summaries of a generation stage's stats, for the CLI."""

from __future__ import annotations

from typing import Any


def render_stats(stats: dict[str, Any]) -> str:
    """'magpie: 6 in, 5 kept; dropped truncated_instruction=1; 411 tokens in 12.3 s (33.4 tok/s)'."""
    dropped = ", ".join(f"{k}={v}" for k, v in stats.get("dropped", {}).items()) or "none"
    line = f"{stats['stage']}: {stats['rows_in']} in, {stats['rows_kept']} kept; dropped {dropped}"
    if stats.get("completion_tokens"):
        line += f"; {stats['completion_tokens']} tokens in {stats['seconds']:.1f} s ({stats.get('tokens_per_s') or 0:.1f} tok/s)"
    counters = stats.get("counters") or {}
    if counters.get("unparseable") is not None:
        line += f"; unparseable judgements: {counters['unparseable']} of {counters.get('judged', '?')}"
    if "pairs" in stats:
        line += f"; {stats['pairs']} pairs"
    return line
