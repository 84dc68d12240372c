"""Benchmark: ingest a large file of preference rows, against `datasets` JSON -> parquet on the same file.

    .venv/bin/python bench/ingest.py                 # 500,000 rows (and 250,000 to show memory stays flat)
    .venv/bin/python bench/ingest.py --rows 100000   # quicker
    .venv/bin/python bench/ingest.py --rows 100000 --array   # also the same rows as one JSON array

The file is built by repeating the 200 real UltraFeedback pairs of ../shared/data/ultrafeedback/eval_clean.jsonl
(trl-lib style: prompt/chosen/rejected strings, scores under `metadata`). Copy k >= 1 of a pair gets " (k)"
appended to its prompt, so every row is distinct content and none is rejected as a duplicate. It is written to a
temporary folder, never into the repository.

Measured one after the other in the same run, each in its own subprocess so that peak RSS is its own:
  - ours:     alignmix.pipeline.ingest.ingest_source -> validated rows with ids, zstd parquet shards, stats
              (`workers` as ingest chooses by default, and again with one worker process per CPU on the large
              file); with --per-row also the per-row path (fast=False) that the fast path is tested against
  - baseline: datasets.load_dataset("json", data_files=...) followed by Dataset.to_parquet (no validation, no
              conversion: the raw columns as they are)
Prints one JSON object: rows/s, CPU seconds and peak RSS of both at two file sizes, the speed ratio, and
os.getloadavg() before and after (the machine may be shared: compare figures of one run only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT.parent / "shared" / "data" / "ultrafeedback" / "eval_clean.jsonl"


def build_file(path: Path, rows: int, array: bool = False) -> None:
    """`rows` distinct pairs as JSON Lines, or (array=True) as one JSON array of records, one per line."""
    samples = [orjson.loads(line) for line in SAMPLES.read_bytes().split(b"\n") if line.strip()]
    with path.open("wb", buffering=1 << 22) as f:
        f.write(b"[\n" if array else b"")
        for i in range(rows):
            rec = samples[i % len(samples)]
            copy = i // len(samples)
            if copy:
                rec = {**rec, "prompt": f"{rec['prompt']} ({copy})"}
            f.write((b",\n" if array and i else b"") + orjson.dumps(rec) + (b"" if array else b"\n"))
        f.write(b"\n]\n" if array else b"")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: kilobytes


def worker(kind: str, path: str, out: str) -> None:
    """Runs in a subprocess: one measurement, printed as JSON on the last line."""
    if kind.startswith("ours"):
        from alignmix.pipeline.ingest import ingest_source
        from alignmix.pipeline.recipe import SourceSpec

        option = kind.partition(":")[2]
        workers = int(option) if option.isdigit() else None
        start = time.perf_counter()
        stats = ingest_source(SourceSpec(name="bench", path=path), out, workers=workers, fast=option != "per-row")
        seconds = time.perf_counter() - start
        rows, kept = stats["rows_in"], stats["rows_kept"]
        out_bytes = sum((Path(out) / s["file"]).stat().st_size for s in stats["shards"])
    else:
        import datasets

        datasets.disable_progress_bars()
        start = time.perf_counter()
        ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=str(Path(out) / "cache"))
        ds.to_parquet(str(Path(out) / "train.parquet"))
        seconds = time.perf_counter() - start
        rows = kept = ds.num_rows
        out_bytes = (Path(out) / "train.parquet").stat().st_size
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    figures = {"rows": rows, "rows_kept": kept, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
               "cpu_seconds": round(sum(u.ru_utime + u.ru_stime for u in usage), 2),  # imports included
               "peak_rss_mb": peak_rss_mb(), "output_mb": round(out_bytes / 2**20, 1)}
    if kind.startswith("ours") and (workers or 1) > 1:  # worker processes: the largest one's peak
        figures["largest_worker_peak_rss_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN)
    print(json.dumps(figures))


def measure(kind: str, path: Path, work: Path) -> dict:
    out = work / f"out-{kind.replace(':', '-')}-{path.stem}"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--worker", kind, str(path), str(out)],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} on {path.name} failed:\n{proc.stderr[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)  # free the disk before the next run
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500_000, help="rows in the large file (the small one: half)")
    parser.add_argument("--array", action="store_true", help="also measure the large file as one JSON array")
    parser.add_argument("--per-row", action="store_true", help="also measure the per-row path (fast=False)")
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    if not SAMPLES.exists():
        raise SystemExit(f"{SAMPLES} is absent: the benchmark repeats its real rows")

    work = Path(tempfile.mkdtemp(prefix="alignmix-bench-", dir=args.workdir))
    try:
        sizes = {"small": args.rows // 2, "large": args.rows}
        files = {}
        for label, n in sizes.items():
            files[label] = work / f"prefs-{n}.jsonl"
            build_file(files[label], n)
        if args.array:
            files["large_array"] = work / f"prefs-{args.rows}.json"
            build_file(files["large_array"], args.rows, array=True)
        load_before = [round(x, 2) for x in os.getloadavg()]
        result: dict = {
            "benchmark": "ingest preference rows (JSON Lines, and with --array a JSON array) into parquet",
            "input": f"{SAMPLES.name} repeated (200 real UltraFeedback pairs)",
            "cpus": os.cpu_count(),
            "files": {label: {"rows": args.rows if label == "large_array" else sizes[label],
                              "mb": round(path.stat().st_size / 2**20, 1)} for label, path in files.items()},
        }
        for kind, name in (("ours", "alignmix_ingest"), ("datasets", "datasets_load_json_to_parquet")):
            result[name] = {label: measure(kind, path, work) for label, path in files.items()}
        workers = os.cpu_count() or 1
        result[f"alignmix_ingest_workers_{workers}"] = {"large": measure(f"ours:{workers}", files["large"], work)}
        if args.per_row:
            result["alignmix_ingest_per_row_path"] = {"large": measure("ours:per-row", files["large"], work)}
        ours, base = result["alignmix_ingest"]["large"], result["datasets_load_json_to_parquet"]["large"]
        result["summary"] = {
            "rows": sizes["large"],
            "ours_rows_per_s": ours["rows_per_s"],
            "baseline_rows_per_s": base["rows_per_s"],
            "speed_ratio_ours_over_baseline": round(ours["rows_per_s"] / base["rows_per_s"], 2),
            "ours_cpu_seconds": ours["cpu_seconds"],
            "baseline_cpu_seconds": base["cpu_seconds"],
            "ours_peak_rss_mb": ours["peak_rss_mb"],
            "baseline_peak_rss_mb": base["peak_rss_mb"],
            "ours_peak_rss_growth_mb_from_half_to_full_file":
                round(ours["peak_rss_mb"] - result["alignmix_ingest"]["small"]["peak_rss_mb"], 1),
            "baseline_peak_rss_growth_mb_from_half_to_full_file":
                round(base["peak_rss_mb"] - result["datasets_load_json_to_parquet"]["small"]["peak_rss_mb"], 1),
        }
        if args.array:
            ours_a, base_a = result["alignmix_ingest"]["large_array"], result["datasets_load_json_to_parquet"]["large_array"]
            result["summary"]["json_array_speed_ratio_ours_over_baseline"] = round(
                ours_a["rows_per_s"] / base_a["rows_per_s"], 2)
        if args.per_row:
            result["summary"]["fast_over_per_row_path"] = round(
                ours["rows_per_s"] / result["alignmix_ingest_per_row_path"]["large"]["rows_per_s"], 2)
        result["loadavg_before"] = load_before
        result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
