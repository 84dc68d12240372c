"""The build-ultrafeedback-mix flow on real data: outputs, resume after SIGKILL, and Dask giving the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import polars as pl
import pytest
import yaml

from alignmix.pipeline.store import MixStore, sha256_file

BIN = Path(sys.executable).parent


def real_recipe(shared_data: Path, out: Path, name: str = "realmix", **extra) -> dict:
    recipe = {
        "name": name,
        "seed": 7,
        "sources": [
            {"name": "uf", "path": str(shared_data / "ultrafeedback/eval_clean.jsonl")},
            {"name": "hh", "path": str(shared_data / "hh_rlhf/test_prefs.jsonl")},
            {"name": "lf", "path": str(shared_data / "llama_factory/dpo_en_demo.json")},
        ],
        "curation": [
            {"stage": "exact_dedup", "field": "prompt"},
            {"stage": "near_dedup", "field": "prompt", "threshold": 0.8},
            {"stage": "consistency"},
            {"stage": "length", "max_length_ratio": 2.0},
            {"stage": "language", "keep": ["en"]},
            {"stage": "decontam", "evals": [{"path": str(shared_data / "evals/gsm8k_test.jsonl"), "field": "question"}]},
        ],
        "mix": {"sources": {"uf": {"fraction": 1.0}, "hh": {"fraction": 0.5}, "lf": {"count": 100}}, "test_fraction": 0.1},
        "output": {"dir": str(out), "rows_per_shard": 300},
        "task_runner": {"shard_rows": 400},
    }
    recipe.update(extra)
    return recipe


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def shard_digests(mix_dir: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted((mix_dir / "data").glob("*.parquet"))}


def build(recipe_path: Path, *args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """`alignmix build`; a run past `timeout` comes back as returncode -9 with what it had printed, to assert on."""
    cmd = [str(BIN / "alignmix"), "build", str(recipe_path), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, env=env or os.environ.copy(), timeout=timeout)
    except subprocess.TimeoutExpired as err:
        text = [b.decode(errors="replace") if isinstance(b, bytes) else (b or "") for b in (err.stdout, err.stderr)]
        return subprocess.CompletedProcess(cmd, -9, text[0] + f"\n[killed after {timeout:.0f} s]", text[1])


@pytest.fixture(scope="module")
def threads_build(shared_data: Path, tmp_path_factory) -> Path:
    """One uninterrupted build on threads, the reference the other tests compare bytes against."""
    root = tmp_path_factory.mktemp("threads")
    recipe = write_recipe(root / "recipe.yaml", real_recipe(shared_data, root / "out"))
    proc = build(recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "out" / "realmix"


def test_flow_writes_the_mix_card_and_counts(threads_build: Path):
    mix = threads_build
    manifest = json.loads((mix / "manifest.json").read_text())
    store = MixStore(mix)
    # Every shard the manifest lists exists with its row count and checksum.
    for shard in manifest["shards"]:
        path = mix / shard["file"]
        assert sha256_file(path) == shard["sha256"]
        assert pl.read_parquet(path).height == shard["rows"]
    # Rows in = kept + rejected, stage by stage, through the whole curation.
    stats = store.all_stats()
    order = ["exact_dedup", "near_dedup", "consistency", "length", "language", "decontam"]
    ingested = sum(stats[f"ingest-{s}"]["rows_kept"] for s in ("uf", "hh", "lf"))
    assert stats["exact_dedup"]["rows_in"] == ingested
    for before, after in zip(order, order[1:]):
        assert stats[after]["rows_in"] == stats[before]["rows_kept"]
    for stage in order:
        rejected = pl.read_parquet(mix / "rejected" / f"{stage}.parquet")
        assert rejected.height == stats[stage]["rows_in"] - stats[stage]["rows_kept"]
    # The HH-RLHF pairs whose chosen equals rejected never reach the mix.
    mixed = store.read()
    assert (mixed["chosen"] != mixed["rejected"]).all()
    # The card is there, and the shards load in `datasets` with their split sizes.
    assert (mix / "README.md").read_text().startswith("---")
    assert (mix / "card" / "card.html").exists()
    loaded = datasets.load_dataset("parquet", data_dir=str(mix / "data"))
    assert {k: v.num_rows for k, v in loaded.items()} == manifest["splits"]


def test_rerun_skips_finished_stages_and_gives_the_same_bytes(threads_build: Path):
    before = shard_digests(threads_build)
    recipe = threads_build.parent.parent / "recipe.yaml"
    proc = build(recipe)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    for stage in ("exact_dedup", "near_dedup", "consistency", "length", "language", "decontam"):
        assert f"{stage}: finished in an earlier run, skipped" in log
    assert shard_digests(threads_build) == before


def test_cli_mix_gives_the_flows_bytes_and_resumes(threads_build: Path, tmp_path: Path):
    """`alignmix mix` runs the same curation engine without Prefect: same shards; a rerun redoes nothing."""
    recipe = threads_build.parent.parent / "recipe.yaml"
    cmd = [str(BIN / "alignmix"), "mix", str(recipe), "--out", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert shard_digests(tmp_path / "realmix") == shard_digests(threads_build)
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "read uf: 200 rows in, 200 kept (finished in an earlier run)" in again.stdout
    assert "near_dedup: finished in an earlier run, skipped" in again.stdout
    assert shard_digests(tmp_path / "realmix") == shard_digests(threads_build)


@pytest.mark.slow
def test_dask_two_workers_give_identical_shards(shared_data: Path, threads_build: Path, tmp_path: Path):
    recipe = real_recipe(shared_data, tmp_path / "out", task_runner={"kind": "dask", "n_workers": 2, "shard_rows": 400})
    proc = build(write_recipe(tmp_path / "recipe.yaml", recipe), timeout=300)  # 30 s on a quiet machine
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distributed" in proc.stdout + proc.stderr  # the Dask cluster really ran the tasks
    # The workers report to the flow's temporary server instead of each starting one on the same database.
    assert (proc.stdout + proc.stderr).count("Starting temporary server") == 1
    assert shard_digests(tmp_path / "out" / "realmix") == shard_digests(threads_build)
    for stage in ("near_dedup", "length", "language"):
        a = pl.read_parquet(tmp_path / "out" / "realmix" / "rejected" / f"{stage}.parquet")
        b = pl.read_parquet(threads_build / "rejected" / f"{stage}.parquet")
        assert a.equals(b)


def kill_when(cmd: list[str], ready, timeout: float = 600) -> None:
    """Start `cmd`, SIGKILL its whole process group as soon as `ready()` is true."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                raise AssertionError("the run finished before it could be killed; make the kill point earlier")
            if time.time() > deadline:
                raise AssertionError("the kill point was never reached")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_sigkill_during_curation_then_resume(shared_data: Path, threads_build: Path, tmp_path: Path):
    recipe = write_recipe(tmp_path / "recipe.yaml", real_recipe(shared_data, tmp_path / "out"))
    mix = tmp_path / "out" / "realmix"
    # Killed once the first curation stage has finished and while the later ones run.
    kill_when([str(BIN / "alignmix"), "build", str(recipe)], lambda: (mix / "stats" / "exact_dedup.json").exists())
    assert not (mix / "manifest.json").exists()
    proc = build(recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "exact_dedup: finished in an earlier run, skipped" in proc.stdout + proc.stderr
    assert shard_digests(mix) == shard_digests(threads_build)


GENERATION_RECIPE = {
    "name": "genmix",
    "seed": 5,
    "generators": [
        {
            "kind": "magpie", "name": "magpie", "count": 6, "batch_size": 2, "requests_per_batch": 2,
            "system_prompts": [{"text": "You are a helpful assistant. Answer briefly, in at most three sentences."}],
            "instruction": {"max_new_tokens": 48}, "response": {"max_new_tokens": 64},
        }
    ],
    "mix": {"sources": {"magpie": {"fraction": 1.0}}},
    "curation": [{"stage": "exact_dedup", "field": "first_user"}],
}


@pytest.mark.slow
def test_sigkill_during_generation_then_resume(tmp_path: Path):
    ref = write_recipe(tmp_path / "ref.yaml", {**GENERATION_RECIPE, "output": {"dir": str(tmp_path / "ref")}})
    proc = build(ref)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    recipe = write_recipe(tmp_path / "killed.yaml", {**GENERATION_RECIPE, "output": {"dir": str(tmp_path / "killed")}})
    batches = tmp_path / "killed" / "genmix" / "work" / "generated" / "magpie"

    def some_batches_done() -> bool:
        return len(list(batches.rglob("*.kept.parquet"))) >= 1

    kill_when([str(BIN / "alignmix"), "build", str(recipe)], some_batches_done)
    done_before = sorted(p.name for p in batches.rglob("*.kept.parquet"))
    assert 1 <= len(done_before) < 3
    proc = build(recipe)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert shard_digests(tmp_path / "killed" / "genmix") == shard_digests(tmp_path / "ref" / "genmix")
