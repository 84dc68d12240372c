"""The `alignmix` command. Each command is a thin wrapper: parse options, call the library, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

app = typer.Typer(
    help="alignmix: build, curate and mix post-training data (SFT and preference rows), then train on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()


def fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)
    raise typer.Exit(code=2)


# --- pipeline commands --------------------------------------------------------------------------------------


@app.command()
def ingest(
    sources: list[str] = typer.Argument(..., help="files, folders, or hf:<dataset id>[:<split>]"),
    out: Path = typer.Option(..., "--out", help="the folder that receives data/, rejected/, stats/, manifest.json"),
    format: Optional[str] = typer.Option(None, "--format", help="force a format adapter (see `--format help`)"),
    name: Optional[str] = typer.Option(None, "--name", help="the source name recorded in each row (default: file stem)"),
    rows_per_shard: int = typer.Option(100_000, help="rows per parquet shard"),
) -> None:
    """Read SOURCES in any supported format and write normalized shards, rejected rows and stats."""
    from alignmix.pipeline.ingest import IngestError, ingest_sources

    try:
        summary = ingest_sources(sources, out, format=format, name=name, rows_per_shard=rows_per_shard, progress=True)
    except IngestError as err:
        fail(str(err))
    console.print(summary.render(), highlight=False)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="a directory written by alignmix (ingest, dedup, mix, ...)"),
    rows: int = typer.Option(3, help="how many rows to show"),
) -> None:
    """Show the counts, schema and a few rows of a directory alignmix wrote."""
    from alignmix.pipeline.inspect import render_inspect

    try:
        render_inspect(path, rows=rows, console=console)
    except FileNotFoundError as err:
        fail(str(err))


# --- synth commands (generate, judge) -----------------------------------------------------------------------

# --- filter commands (dedup, filter, review) ----------------------------------------------------------------

# --- mix and card commands ----------------------------------------------------------------------------------

# --- training commands --------------------------------------------------------------------------------------

# --- flow commands (build, serve) ---------------------------------------------------------------------------


if __name__ == "__main__":
    app()
