"""Prefect flows, tasks and deployments: the only package that imports prefect."""

import os

# alignmix talks to 127.0.0.1 only: no usage telemetry from the (ephemeral or local) Prefect server.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
