"""What `alignmix serve` serves, checked without a server: every flow of the issue, each with its recipe."""

from __future__ import annotations

from alignmix.flows.deployments import deployments
from alignmix.flows.recipes import RECIPES_DIR


def test_serve_offers_the_main_flow_and_every_part_flow():
    served = {(d.flow_name, d.name): d for d in deployments()}
    assert set(served) == {
        ("build-ultrafeedback-mix", "demo"),
        ("build-ultrafeedback-mix", "ultrafeedback"),
        *((part, "demo") for part in (
            "generate-magpie", "generate-self-instruct", "build-preferences", "curate", "train-sft", "train-dpo",
        )),
        ("iterative-dpo", "demo"),
    }
    demo = str((RECIPES_DIR / "demo.yaml").resolve())
    assert served[("build-ultrafeedback-mix", "ultrafeedback")].parameters == {
        "recipe": str((RECIPES_DIR / "ultrafeedback-mix.yaml").resolve())
    }
    assert served[("iterative-dpo", "demo")].parameters == {
        "recipe": str((RECIPES_DIR / "iterative-demo.yaml").resolve())
    }
    for (flow, name), d in served.items():
        if name == "demo" and flow != "iterative-dpo":
            assert d.parameters == {"recipe": demo}, flow
