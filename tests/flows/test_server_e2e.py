"""End to end on a real Prefect server on 127.0.0.1: serve the deployments, run the demo deployment the way users
do (`prefect deployment run build-ultrafeedback-mix/demo --watch`), check the shards, the card and the artifacts."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import datasets
import httpx
import pytest

from alignmix.pipeline.store import sha256_file
from tests.flows.prefect_server import BIN, prefect_server, stop


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the whole demo (generation, judging, curation, SFT, DPO): minutes on 2 busy cores
def test_demo_deployment_on_a_prefect_server(tmp_path: Path):
    with prefect_server(tmp_path / "prefect-home") as (api_url, env):
        serve_log = open(tmp_path / "serve.log", "w")
        server = subprocess.Popen(
            [str(BIN / "alignmix"), "serve"], cwd=tmp_path, env=env,
            stdout=serve_log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.time() + 120
            while True:  # wait until the deployment is registered
                r = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=10)
                names = {d["name"] for d in r.json()} if r.status_code == 200 else set()
                if {"demo", "ultrafeedback"} <= names:
                    break
                assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.time() < deadline, "the deployments were never registered"
                time.sleep(1)

            run = subprocess.run(
                [str(BIN / "prefect"), "deployment", "run", "build-ultrafeedback-mix/demo", "--watch"],
                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2300,
            )
            assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + (tmp_path / "serve.log").read_text()[-5000:]
            assert "Completed" in run.stdout

            artifacts = httpx.post(f"{api_url}/artifacts/filter", json={}, timeout=10).json()
            keys = {a["key"] for a in artifacts}
            assert {"demo-data-card", "demo-shards", "demo-funnel"} <= keys
            card_artifact = next(a for a in artifacts if a["key"] == "demo-data-card")
            assert card_artifact["type"] == "markdown" and "synthetic_prefs" in card_artifact["data"]
        finally:
            stop(server)
            serve_log.close()

    mix = tmp_path / "out" / "demo"
    manifest = json.loads((mix / "manifest.json").read_text())
    assert manifest["row_kind"] == "preference"
    for shard in manifest["shards"]:
        assert sha256_file(mix / shard["file"]) == shard["sha256"]
    loaded = datasets.load_dataset("parquet", data_dir=str(mix / "data"))
    assert {k: v.num_rows for k, v in loaded.items()} == manifest["splits"]
    assert manifest["splits"]["train"] > 0
    readme = (mix / "README.md").read_text()
    assert readme.startswith("---") and "synthetic_prefs" in readme
    assert (mix / "card" / "card.html").exists()
    # The generators, the preference build and every curation stage left their stats.
    stats = {p.stem for p in (mix / "stats").glob("*.json")}
    assert {"magpie", "self_instruct", "exact_dedup", "near_dedup", "consistency", "length", "quality", "language", "mix"} <= stats
    # The demo trains too: both adapters exist.
    assert (mix / "training" / "sft" / "adapter" / "adapter_config.json").exists()
    assert (mix / "training" / "dpo" / "adapter" / "adapter_config.json").exists()


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_prefect_yaml_deploys_its_deployments_to_a_work_pool(tmp_path: Path):
    """The work-pool route in prefect.yaml: `prefect deploy --all` loads each entrypoint and registers it."""
    with prefect_server(tmp_path / "prefect-home") as (api_url, env):
        prefect = str(BIN / "prefect")
        pool = subprocess.run([prefect, "work-pool", "create", "alignmix", "--type", "process"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert pool.returncode == 0, pool.stdout[-2000:] + pool.stderr[-2000:]
        deploy = subprocess.run([prefect, "--no-prompt", "deploy", "--all"],
                                cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert deploy.returncode == 0, deploy.stdout[-3000:] + deploy.stderr[-3000:]
        deployments = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=10).json()
        flows = {f["id"]: f["name"] for f in httpx.post(f"{api_url}/flows/filter", json={}, timeout=10).json()}
        by_name = {(flows[d["flow_id"]], d["name"]): d for d in deployments}
        expected = {
            ("build-ultrafeedback-mix", "demo"): ("alignmix/flows/build.py:build_ultrafeedback_mix", "recipes/demo.yaml"),
            ("build-ultrafeedback-mix", "ultrafeedback"): (
                "alignmix/flows/build.py:build_ultrafeedback_mix", "recipes/ultrafeedback-mix.yaml"),
            ("iterative-dpo", "demo"): ("alignmix/flows/iterative.py:iterative_dpo", "recipes/iterative-demo.yaml"),
        }
        assert set(by_name) == set(expected)
        for key, (entrypoint, recipe) in expected.items():
            d = by_name[key]
            assert d["work_pool_name"] == "alignmix"
            assert d["entrypoint"] == entrypoint
            assert d["parameters"] == {"recipe": recipe}
            assert "recipe" in d["parameter_openapi_schema"]["properties"]
            # A worker on this machine starts the run in the checkout: the pull step points at it.
            assert d["pull_steps"] == [
                {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
            ], d["pull_steps"]
