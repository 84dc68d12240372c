"""Benchmark: ingest a large JSON Lines file of preference rows, against `datasets` on the same file.

    .venv/bin/python bench/ingest.py                 # 500,000 rows (and 250,000 to show memory stays flat)
    .venv/bin/python bench/ingest.py --rows 100000   # quicker

The file is built by repeating the 200 real UltraFeedback pairs of ../shared/data/ultrafeedback/eval_clean.jsonl
(trl-lib style: prompt/chosen/rejected strings, scores under `metadata`). Copy k >= 1 of a pair gets " (k)"
appended to its prompt, so every row is distinct content and none is rejected as a duplicate. It is written to a
temporary folder, never into the repository.

Measured, each in its own subprocess so that peak RSS is its own:
  - ours:     alignmix.pipeline.ingest.ingest_source -> validated rows with ids, zstd parquet shards, stats
              (one process, and again with one worker process per CPU on the large file)
  - baseline: datasets.load_dataset("json", data_files=...) followed by Dataset.to_parquet (no validation, no
              conversion: the raw columns as they are)
Prints one JSON object: rows/s and peak RSS for both, at two file sizes.
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


def build_file(path: Path, rows: int) -> None:
    samples = [orjson.loads(line) for line in SAMPLES.read_bytes().split(b"\n") if line.strip()]
    with path.open("wb", buffering=1 << 22) as f:
        for i in range(rows):
            rec = samples[i % len(samples)]
            copy = i // len(samples)
            if copy:
                rec = {**rec, "prompt": f"{rec['prompt']} ({copy})"}
            f.write(orjson.dumps(rec) + b"\n")


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return round(resource.getrusage(who).ru_maxrss / 1024, 1)  # Linux: kilobytes


def worker(kind: str, path: str, out: str) -> None:
    """Runs in a subprocess: one measurement, printed as JSON on the last line."""
    if kind.startswith("ours"):
        from alignmix.pipeline.ingest import ingest_source
        from alignmix.pipeline.recipe import SourceSpec

        workers = int(kind.partition(":")[2] or 1)
        start = time.perf_counter()
        stats = ingest_source(SourceSpec(name="bench", path=path), out, workers=workers)
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
    figures = {"rows": rows, "rows_kept": kept, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
               "peak_rss_mb": peak_rss_mb(), "output_mb": round(out_bytes / 2**20, 1)}
    if kind.startswith("ours:"):  # worker processes: the largest one's peak (each worker holds a few batches)
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
        result: dict = {
            "benchmark": "ingest JSON Lines of preference rows into parquet",
            "input": f"{SAMPLES.name} repeated (200 real UltraFeedback pairs)",
            "cpus": os.cpu_count(),
            "files": {label: {"rows": sizes[label], "mb": round(files[label].stat().st_size / 2**20, 1)}
                      for label in sizes},
        }
        for kind, name in (("ours", "alignmix_ingest"), ("datasets", "datasets_load_json_to_parquet")):
            result[name] = {label: measure(kind, files[label], work) for label in ("small", "large")}
        workers = os.cpu_count() or 1
        result[f"alignmix_ingest_workers_{workers}"] = {"large": measure(f"ours:{workers}", files["large"], work)}
        ours, base = result["alignmix_ingest"]["large"], result["datasets_load_json_to_parquet"]["large"]
        result["summary"] = {
            "rows": sizes["large"],
            "ours_rows_per_s": ours["rows_per_s"],
            "baseline_rows_per_s": base["rows_per_s"],
            "speed_ratio_ours_over_baseline": round(ours["rows_per_s"] / base["rows_per_s"], 2),
            "ours_peak_rss_mb": ours["peak_rss_mb"],
            "baseline_peak_rss_mb": base["peak_rss_mb"],
            "ours_peak_rss_growth_mb_from_half_to_full_file":
                round(ours["peak_rss_mb"] - result["alignmix_ingest"]["small"]["peak_rss_mb"], 1),
            "baseline_peak_rss_growth_mb_from_half_to_full_file":
                round(base["peak_rss_mb"] - result["datasets_load_json_to_parquet"]["small"]["peak_rss_mb"], 1),
        }
        print(json.dumps(result, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
