"""A flow's one parameter is a recipe: a path to a YAML file, the name of a bundled recipe, or inline YAML.

Every section is validated here, before any compute is spent: the generators and preferences by synth's
configs, the curation stages by the filter registry, the training runs by training's configs.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from alignmix.pipeline.recipe import Recipe, RecipeError, format_validation_error, load_recipe

# The bundled recipes ship inside the package (package data), so `demo` resolves in a wheel install too; the
# checkout's top-level recipes/ is a link to this folder, for `alignmix build recipes/demo.yaml`.
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def resolve_recipe(ref: str | dict) -> Recipe:
    """`recipes/demo.yaml`, `demo` (a bundled recipe) or a YAML document as a string."""
    if isinstance(ref, dict):
        recipe, origin = load_recipe(ref), "<recipe>"
    else:
        text = str(ref)
        if "\n" not in text and not text.endswith((".yaml", ".yml")) and (RECIPES_DIR / f"{text}.yaml").exists():
            text = str(RECIPES_DIR / f"{text}.yaml")
        recipe, origin = load_recipe(text), (text if "\n" not in text else "<inline recipe>")
    validate_sections(recipe, origin)
    return recipe


def validate_sections(recipe: Recipe, origin: str) -> None:
    """Raise RecipeError naming the section, the field and the fix for any section its owner rejects."""
    from alignmix.filters.registry import build_stage
    from alignmix.synth.config import PreferencesConfig, parse_generator
    from alignmix.training import TrainingSection

    checks = [(f"generators[{i}]", lambda g=g: parse_generator(g)) for i, g in enumerate(recipe.generators)]
    checks += [(f"curation[{i}]", lambda c=c: build_stage(c)) for i, c in enumerate(recipe.curation)]
    if recipe.preferences:
        checks.append(("preferences", lambda: PreferencesConfig.model_validate(recipe.preferences)))
    if recipe.training:
        checks.append(("training", lambda: TrainingSection.model_validate(recipe.training)))
    if recipe.iterative:
        checks += _iterative_checks(recipe)
    for where, check in checks:
        try:
            check()
        except ValidationError as err:
            raise RecipeError(format_validation_error(err, f"{origin}: {where}")) from None
        except ValueError as err:
            raise RecipeError(f"{origin}: {where}: {err}") from None


def _iterative_checks(recipe: Recipe) -> list:
    """The `iterative:` section's parts, each by its owner: the policy's sampling and the judge (as round 1's
    preferences spec), the answers compared for the win rate, and the DPO settings."""
    from alignmix.pipeline.rounds import RoundPlan
    from alignmix.synth.config import PreferencesConfig, Responder
    from alignmix.training.config import DPOTrainConfig

    plan = RoundPlan(recipe.iterative, recipe.out_dir(), recipe.seed, recipe.preferences, recipe.curation)
    return [
        ("iterative.sampling", lambda: Responder.model_validate(plan.responder(1, recipe.iterative.samples_per_prompt))),
        ("iterative", lambda: PreferencesConfig.model_validate({"judge": plan.judge})),
        ("iterative.heldout", lambda: PreferencesConfig.model_validate(plan.answers_spec(1))),
        ("iterative", lambda: PreferencesConfig.model_validate(plan.samples_spec(1))),
        ("iterative.dpo", lambda: DPOTrainConfig.model_validate(plan.dpo_spec(1))),
    ]
