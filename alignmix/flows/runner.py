"""Which task runner a flow's per-shard work runs on: threads on one machine, or a Dask cluster past it.

    task_runner_for(None)                                  -> threads (ThreadPoolTaskRunner, 2 workers)
    task_runner_for({"kind": "dask", "address": "tcp://10.0.0.5:8786"})  -> an existing Dask cluster
    task_runner_for({"kind": "dask", "n_workers": 2})     -> a local Dask cluster of 2 worker processes

Every per-shard task writes its result to a file under the mix's work folder and hands back only the path,
so the results are the same bytes whichever runner ran them; a real cluster needs that folder on a shared
file system (NFS, a mounted bucket) reachable at the same path from every worker.
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner


def task_runner_for(spec: dict[str, Any] | None, dask_address: str | None = None):
    """A Prefect task runner from a recipe's `task_runner` section, or from `--dask-address`."""
    spec = dict(spec or {})
    if dask_address:
        spec = {"kind": "dask", "address": dask_address}
    kind = spec.get("kind", "threads")
    if kind == "threads":
        return ThreadPoolTaskRunner(max_workers=int(spec.get("max_workers", 2)))
    if kind != "dask":
        raise ValueError(f"task_runner.kind = {kind!r}: use 'threads' or 'dask'")
    from prefect_dask import DaskTaskRunner

    if spec.get("address"):
        return DaskTaskRunner(address=spec["address"])
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": int(spec.get("n_workers", 2)),
            "threads_per_worker": int(spec.get("threads_per_worker", 1)),
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        },
    )
