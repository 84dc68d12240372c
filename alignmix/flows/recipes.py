"""A flow's one parameter is a recipe: a path to a YAML file, the name of a bundled recipe, or inline YAML."""

from __future__ import annotations

from pathlib import Path

from alignmix.pipeline.recipe import Recipe, load_recipe

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def resolve_recipe(ref: str | dict) -> Recipe:
    """`recipes/demo.yaml`, `demo` (a bundled recipe) or a YAML document as a string."""
    if isinstance(ref, dict):
        return load_recipe(ref)
    text = str(ref)
    if "\n" not in text and not text.endswith((".yaml", ".yml")) and (RECIPES_DIR / f"{text}.yaml").exists():
        return load_recipe(RECIPES_DIR / f"{text}.yaml")
    return load_recipe(text)
