"""What `alignmix ingest` prints: one line per source with its format, row kind, counts and drop reasons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class IngestSummary:
    """What `ingest_sources` did: one stats dict per source, and where each went."""

    out: Path
    sources: list[dict[str, Any]]
    folders: list[Path]

    @property
    def rows_in(self) -> int:
        return sum(s["rows_in"] for s in self.sources)

    @property
    def rows_kept(self) -> int:
        return sum(s["rows_kept"] for s in self.sources)

    def render(self) -> Any:
        """A rich table: one line per source with its format, counts and drop reasons."""
        from rich.table import Table

        table = Table(title=f"ingested into {self.out}" + (" (one folder per source)" if len(self.folders) > 1 else ""),
                      title_justify="left")
        for col in ("source", "format", "rows in", "kept", "rejected", "reasons"):
            numeric = col in ("rows in", "kept", "rejected")
            table.add_column(col, justify="right" if numeric else "left", no_wrap=col != "reasons")
        for s in self.sources:
            dropped = s["dropped"]
            reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "-"
            table.add_row(s["source"] + (" (resumed)" if s.get("resumed") else ""), f"{s['format']} ({s['kind']})",
                          f"{s['rows_in']:,}", f"{s['rows_kept']:,}", f"{sum(dropped.values()):,}", reasons)
        return table
