"""Recipes: errors name the field, the bad value and the fix; relative paths follow the recipe file."""

from __future__ import annotations

import pytest

from alignmix.pipeline.recipe import RecipeError, load_recipe


def test_error_names_field_value_and_fix(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\nsources:\n  - {name: uf, path: x.jsonl}\nmix:\n  sources:\n    uf: {fraction: 1.5}\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: the recipe is not valid:")
    assert "mix.sources.uf.fraction = 1.5: Input should be less than or equal to 1 (fix: use a smaller value)" in msg


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("name: demo\nsede: 3\n", "sede = 3: Extra inputs are not permitted (fix: remove it, or check its spelling"),
        ("name: 'my mix!'\n", "name = 'my mix!': String should match pattern"),
        ("name: d\nsources:\n  - {name: a}\n", "give exactly one of `path` (a local file or folder) or `hf`"),
        ("name: d\nseed: many\n", "seed = 'many': Input should be a valid integer"),
        ("name: d\nsources:\n  - {name: a, path: x}\n  - {name: a, hf: y}\n", "repeated: ['a']"),
        ("name: d\nmix:\n  sources:\n    a: {fraction: 0.5, count: 3}\n", "give exactly one of fraction, count or share"),
    ],
)
def test_each_mistake_is_explained(yaml_text, expected):
    with pytest.raises(RecipeError) as err:
        load_recipe(yaml_text)
    assert expected in str(err.value)


def test_not_yaml_and_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe("name: [unclosed\n")
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_relative_source_paths_resolve_against_the_recipe(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_text("")
    (tmp_path / "r.yaml").write_text("name: demo\nsources:\n  - {name: a, path: data.jsonl}\n")
    monkeypatch.chdir("/")
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.sources[0].path == str(tmp_path / "data.jsonl")
    assert recipe.out_dir().as_posix() == "out/demo"
