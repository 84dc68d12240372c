"""Which task runner a flow's per-shard work runs on: threads on one machine, or a Dask cluster past it.

    task_runner_for(None)                                  -> threads (ThreadPoolTaskRunner, 2 workers)
    task_runner_for({"kind": "dask", "address": "tcp://10.0.0.5:8786"})  -> an existing Dask cluster
    task_runner_for({"kind": "dask", "n_workers": 2})     -> a local Dask cluster of 2 worker processes

Every per-shard task writes its result to a file under the mix's work folder and hands back only the path,
so the results are the same bytes whichever runner ran them; a real cluster needs that folder on a shared
file system (NFS, a mounted bucket) reachable at the same path from every worker.

The workers of a local cluster report their task runs to the flow's own Prefect API. Without one
(no PREFECT_API_URL), the flow runs on Prefect's temporary server, and each worker process would start a
temporary server of its own on the same SQLite database: seconds per worker, and on a loaded machine a build
that never finished. Workers of an existing cluster need PREFECT_API_URL set where they run.
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
            "env": {"PREFECT_API_URL": _flow_api_url()},
        },
    )


def _flow_api_url() -> str:
    """The Prefect API this process reports to: PREFECT_API_URL, or the temporary server Prefect starts for it."""
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return PREFECT_API_URL.value()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # one per process: the server this process's flow runs already use
    server.start()
    return server.api_url
