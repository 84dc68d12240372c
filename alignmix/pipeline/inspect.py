"""`alignmix inspect DIR`: counts per split, the row kind and schema, rejected reasons and a few rows, in the terminal.

The row kind (sft, prompt or preference) comes from what wrote the folder (ingest stats, the manifest); prompt
rows show their turns and end with "awaiting a response", since SFT and prompt rows share one schema.

DIR is a store folder (data/, rejected/, stats/), or a folder of them (what `alignmix ingest A B --out DIR`
writes). Counts come from parquet footers and only the rows shown are read, so it is quick on any size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl
import pyarrow.parquet as pq
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from alignmix.pipeline.store import MixStore

PREVIEW_CHARS = 160


def store_folders(path: str | Path) -> list[Path]:
    """The store folders at `path`: itself if it has data/ or rejected/, else its sub-folders that do."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")

    def is_store(p: Path) -> bool:
        return (p / "data").is_dir() or (p / "rejected").is_dir()

    if is_store(path):
        return [path]
    found = sorted(p for p in path.iterdir() if p.is_dir() and is_store(p))
    if not found:
        raise FileNotFoundError(f"{path}: holds no data/ or rejected/ folder; is it a folder alignmix wrote?")
    return found


def split_counts(store: MixStore) -> dict[str, dict[str, int]]:
    """{split: {"rows": n, "shards": k}} from the parquet footers, without reading any row."""
    out: dict[str, dict[str, int]] = {}
    for f in store.shard_files():
        split = f.name.split("-")[0]
        entry = out.setdefault(split, {"rows": 0, "shards": 0})
        entry["rows"] += pq.ParquetFile(f).metadata.num_rows
        entry["shards"] += 1
    return out


def rejected_counts(store: MixStore) -> pl.DataFrame:
    """Rejected rows per stage and reason, largest first (empty frame when nothing was rejected)."""
    files = sorted((store.root / "rejected").glob("*.parquet"))
    if not files:
        return pl.DataFrame(schema={"drop_stage": pl.String, "drop_reason": pl.String, "rows": pl.UInt32})
    lazy = [pl.scan_parquet(f).select("drop_stage", "drop_reason") for f in files]
    return (
        pl.concat(lazy).group_by("drop_stage", "drop_reason").agg(pl.len().alias("rows"))
        .sort(["rows", "drop_stage", "drop_reason"], descending=[True, False, False]).collect()
    )


def _clip(text: Any, n: int = PREVIEW_CHARS) -> str:
    s = str(text).replace("\n", " ⏎ ")
    return s if len(s) <= n else s[: n - 1] + "…"


def _row_panel(row: dict[str, Any]) -> Panel:
    body = Text()
    if "chosen" in row:
        body.append("prompt   ", style="bold")
        body.append(_clip(row["prompt"]) + "\n")
        for side in ("chosen", "rejected"):
            score = row.get(f"score_{side}")
            body.append(f"{side:<9}", style="bold green" if side == "chosen" else "bold red")
            body.append(_clip(row[side][-1]["content"]) + (f"  [score {score:g}]" if score is not None else "") + "\n")
        body.append(f"turns    {len(row['chosen'])}\n", style="dim")
    else:
        for m in row["messages"]:
            body.append(f"{m['role']:<10}", style="bold")
            body.append(_clip(m["content"]) + "\n")
        if row["messages"] and row["messages"][-1]["role"] == "user":
            body.append("(prompt row: awaiting a response)\n", style="italic yellow")
    meta = row.get("meta") or "{}"
    if meta != "{}":
        body.append("meta     " + _clip(orjson.loads(meta), 120) + "\n", style="dim")
    title = f"{row.get('source')}#{row.get('source_id')}  id {str(row.get('id'))[:12]}"
    return Panel(body, title=title, title_align="left")


def stored_kind(store: MixStore) -> str | None:
    """The row kind a store folder recorded: its ingest stats' `kind`, else its manifest's `row_kind`."""
    kinds = {s["kind"] for s in store.all_stats().values() if str(s.get("stage", "")).startswith("ingest-") and s.get("kind")}
    if len(kinds) == 1:
        return kinds.pop()
    manifest = store.read_manifest() if store.manifest_path.exists() else {}
    return manifest.get("row_kind")


def render_inspect(path: str | Path, rows: int = 3, console: Console | None = None) -> None:
    """Print every store under `path`: counts per split, schema, rejected reasons, stats and `rows` rows."""
    console = console or Console()
    for folder in store_folders(path):
        store = MixStore(folder)
        console.rule(f"[bold]{folder}")
        counts = split_counts(store)
        kind = stored_kind(store)
        table = Table(title=f"splits ({kind} rows)" if kind else "splits", title_justify="left")
        for col in ("split", "rows", "shards"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, c in counts.items():
            table.add_row(split, f"{c['rows']:,}", str(c["shards"]))
        parts: list[Any] = [table] if counts else [Text("no shards in data/", style="yellow")]

        rejected = rejected_counts(store)
        if rejected.height:
            rt = Table(title=f"rejected ({int(rejected['rows'].sum()):,} rows)", title_justify="left")
            for col in ("stage", "reason", "rows"):
                rt.add_column(col, justify="right" if col == "rows" else "left")
            for stage, reason, n in rejected.iter_rows():
                rt.add_row(stage, reason, f"{n:,}")
            parts.append(rt)

        for name, stats in MixStore(folder).all_stats().items():
            if "rows_in" in stats:
                line = f"{name}: {stats['rows_in']:,} in, {stats.get('rows_kept', 0):,} kept"
                if stats.get("format"):
                    line += f" (format {stats['format']}, {stats.get('kind')})"
                parts.append(Text(line, style="dim"))
        console.print(Group(*parts))

        files = store.shard_files()
        if files:
            schema = pq.read_schema(files[0])
            st = Table(title="schema", title_justify="left")
            st.add_column("column")
            st.add_column("type")
            for f in schema:
                st.add_row(f.name, str(f.type))
            console.print(st)
            if rows > 0:
                head = store.scan().head(rows).collect().to_dicts()
                console.print(*[_row_panel(r) for r in head])
