"""Prefect flows, tasks and deployments: the only package that imports prefect."""
