"""Deployments of alignmix's flows, served against a Prefect server.

    prefect server start --host 127.0.0.1          # in one terminal
    alignmix serve                                  # in another (PREFECT_API_URL=http://127.0.0.1:4200/api)
    prefect deployment run build-ultrafeedback-mix/demo --watch

`build-ultrafeedback-mix/demo` builds recipes/demo.yaml, `build-ultrafeedback-mix/ultrafeedback` the full-size
recipes/ultrafeedback-mix.yaml; every part flow is served too, with the recipe as its one parameter.
`iterative-dpo/demo` runs two rounds of on-policy DPO from recipes/iterative-demo.yaml.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve as prefect_serve

from alignmix.flows.build import PART_FLOWS, build_ultrafeedback_mix
from alignmix.flows.iterative import iterative_dpo
from alignmix.flows.recipes import RECIPES_DIR


def deployments(recipes_dir: Path = RECIPES_DIR) -> list:
    demo = str((recipes_dir / "demo.yaml").resolve())
    full = str((recipes_dir / "ultrafeedback-mix.yaml").resolve())
    out = [
        build_ultrafeedback_mix.to_deployment(
            "demo", parameters={"recipe": demo}, description="The offline demo on the embedded default model."
        ),
        build_ultrafeedback_mix.to_deployment(
            "ultrafeedback",
            parameters={"recipe": full},
            description="The full-size build: ultrafeedback_binarized + MAGPIE + Self-Instruct on vLLM (GPU).",
        ),
    ]
    for part in PART_FLOWS:
        out.append(part.to_deployment("demo", parameters={"recipe": demo}))
    iterative = str((recipes_dir / "iterative-demo.yaml").resolve())
    out.append(iterative_dpo.to_deployment(
        "demo", parameters={"recipe": iterative},
        description="Two rounds of on-policy DPO on the embedded default model (recipes/iterative-demo.yaml).",
    ))
    return out


def serve(limit: int | None = None) -> None:
    """Serve every deployment until interrupted; runs execute in this process's machine."""
    prefect_serve(*deployments(), limit=limit)
