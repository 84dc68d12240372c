"""Regenerate the bundled evaluation prompts and SOURCES.md from the upstream files (a maintainer's script).

    python -m alignmix.filters.evals.build SOURCE_DIR [--out DIR]

SOURCE_DIR holds the upstream files as their origins ship them (`BundledSet.source_file`: gsm8k_test.jsonl,
TruthfulQA.csv, HumanEval.jsonl.gz, ...). Each is read with the reader decontamination uses, its prompt field
taken and nothing else, in upstream order, and written as `<name>.jsonl.gz`: one `{"prompt": ...}` (or
`{"turns": [...]}`) per line, gzip with mtime 0 and no file name, so the same input gives the same bytes.
A row count other than the one recorded in BUNDLED stops the build: a changed upstream file needs a look.
"""

from __future__ import annotations

import argparse
import gzip
import io
from pathlib import Path

import orjson

from alignmix.filters.evals import BUNDLED, HERE, BundledSet
from alignmix.filters.evalsets import EvalSet, read_eval_items

HEADER = """\
# Bundled evaluation prompts

The prompts (and only the prompts) of common public evaluation sets, for decontamination offline:
`decontam: {evals: [gsm8k, ifeval, mt_bench, alpaca_eval, humaneval, truthfulqa, arena_hard]}`.
Each `<name>.jsonl.gz` holds one `{"prompt": ...}` (or `{"turns": [...]}`) per line, in the upstream order,
so a match `gsm8k#17` is item 17 (from 0) of the upstream file. Answers, solutions, tests and model outputs
are left out. Regenerate with `python -m alignmix.filters.evals.build SOURCE_DIR` (generated file: do not edit).

| name | origin (repository @ commit, path) | license | rows | field taken | note |
|---|---|---|---|---|---|
"""


def build_set(spec: BundledSet, source_dir: Path) -> bytes:
    """The gzip JSON Lines bytes of one bundled set."""
    path = source_dir / spec.source_file
    items = read_eval_items(EvalSet(path=str(path), field=spec.source_field))
    if len(items) != spec.rows:
        raise SystemExit(f"{path}: {len(items)} rows, expected {spec.rows}; check the upstream file, then update "
                         f"BundledSet({spec.name!r}).rows")
    lines = []
    for i, turns in enumerate(items):
        if spec.field == "turns":
            lines.append(orjson.dumps({"turns": list(turns)}))
        elif len(turns) == 1:
            lines.append(orjson.dumps({"prompt": turns[0]}))
        else:
            raise SystemExit(f"{path} item {i}: field {spec.source_field!r} holds {len(turns)} turns, expected one")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(b"\n".join(lines) + b"\n")
    return buf.getvalue()


def sources_md() -> str:
    rows = [f"| {s.name} | {s.origin} | {s.license} | {s.rows} | `{s.source_field}` | {s.note} |"
            for s in BUNDLED.values()]
    return HEADER + "\n".join(rows) + "\n"


def build(source_dir: Path, out: Path = HERE) -> dict[str, bytes]:
    """Every bundled file by name (`<name>.jsonl.gz` and SOURCES.md), written to `out`."""
    files = {f"{s.name}.jsonl.gz": build_set(s, source_dir) for s in BUNDLED.values()}
    files["SOURCES.md"] = sources_md().encode()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(out / name)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m alignmix.filters.evals.build", description=__doc__.split("\n")[0])
    parser.add_argument("source_dir", type=Path, help="the folder holding the upstream evaluation files")
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: the package folder)")
    args = parser.parse_args(argv)
    for name, data in build(args.source_dir, args.out).items():
        print(f"{args.out / name}: {len(data):,} bytes")


if __name__ == "__main__":
    main()
