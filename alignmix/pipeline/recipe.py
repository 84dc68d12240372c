"""Recipes: a YAML file, validated by pydantic, that says what to read, generate, curate, mix and train.

    name: demo
    seed: 13
    sources:
      - {name: uf, path: data/ultrafeedback.jsonl}
    mix:
      sources: {uf: {fraction: 1.0}}
    output: {dir: out}

Sections owned by other parts (`generators`, `preferences`, `curation`, `training`) are validated here for
their shape and by their own config classes when they run. An error names the field, the bad value and the fix:

    recipes/demo.yaml: mix.sources.uf.fraction = 1.5: Input should be less than or equal to 1
      (fix: a fraction of the source after curation lies in (0, 1]; use count with upsample: true for more)
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml
from pydantic import Field, ValidationError, model_validator

from alignmix.pipeline.columns import ColumnMap
from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.fusion import FusionSpec, Mode
from alignmix.pipeline.rounds import IterativeSpec


class RecipeError(ValueError):
    """A recipe that does not validate; the message lists every bad field with its value and a fix."""


_Strict = StrictModel


class SourceSpec(_Strict):
    """Where rows come from: a local file or folder, or a Hugging Face dataset id."""

    name: str = Field(description="the recipe's name for this source; recorded in every row's `source`")
    path: str | None = Field(None, description="a local file (parquet, .jsonl, .jsonl.gz, .json) or folder")
    hf: str | None = Field(None, description="a Hugging Face dataset id, read through `datasets` (Hub or cache)")
    hf_config: str | None = Field(None, description="the dataset config name, if it has several")
    split: str | None = Field(None, description="the split to read, e.g. train_prefs")
    format: str | None = Field(None, description="force a format adapter instead of detecting it from the columns")
    kind: Literal["sft", "prompt"] | None = Field(
        None, description="for conversation formats: sft rows (ending with an answer) or prompt rows (ending with the "
        "user turn to answer); judged from the first records when unset"
    )
    limit: int | None = Field(None, gt=0, description="read at most this many rows (for quick runs)")
    columns: ColumnMap | None = Field(
        None, description="which field holds what, for files in no known format: {prompt, query, options, system, "
        "response, reasoning, ground_truth} -> field names (see pipeline/columns.py)"
    )

    @model_validator(mode="after")
    def _one_location(self) -> SourceSpec:
        if (self.path is None) == (self.hf is None):
            raise ValueError("give exactly one of `path` (a local file or folder) or `hf` (a dataset id)")
        if self.columns is not None and self.format is not None:
            raise ValueError("give `format` or `columns`, not both: a column mapping is its own format")
        return self


class MixSourceSpec(_Strict):
    """How much of one source goes into the mix: exactly one of fraction, count or share."""

    fraction: float | None = Field(None, gt=0, le=1, description="a fraction of the source after curation")
    count: int | None = Field(None, gt=0, description="an absolute number of rows")
    share: float | None = Field(None, gt=0, le=1, description="a share of the final mix (needs mix.total)")
    upsample: bool = Field(False, description="allow repeating rows when more are asked than the source has")
    mode: Mode = Field("auto", description="thinking-mode fusion (needs mix.fusion): auto (each row as it is), "
                       "non_thinking (reasoning taken out), thinking (every row must reason); see pipeline/fusion.py")

    @model_validator(mode="after")
    def _one_amount(self) -> MixSourceSpec:
        given = [k for k in ("fraction", "count", "share") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of fraction, count or share (got {given or 'none'})")
        return self


class MixSpec(_Strict):
    sources: dict[str, MixSourceSpec] = Field(default_factory=dict, description="per source: how much of it")
    total: int | None = Field(None, gt=0, description="the size of the final mix, needed by `share`")
    test_fraction: float = Field(0.0, ge=0, lt=1, description="the share of rows held out as the test split")
    stratify_by: list[Literal["source", "category"]] = Field(default_factory=lambda: ["source"])
    fusion: FusionSpec | None = Field(None, description="thinking and non-thinking rows at set shares, with Qwen3's "
                                      "/think and /no_think flags (see pipeline/fusion.py)")

    @model_validator(mode="after")
    def _total_for_shares(self) -> MixSpec:
        if any(s.share is not None for s in self.sources.values()) and self.total is None:
            raise ValueError("sources given by `share` need `total`, the size of the final mix")
        moded = sorted(n for n, s in self.sources.items() if s.mode != "auto")
        if moded and self.fusion is None:
            raise ValueError(f"sources {moded} set a `mode`, which only thinking-mode fusion reads: add "
                             "`fusion: {}` (or a thinking share) to mix, or remove `mode`")
        return self


class OutputSpec(_Strict):
    dir: str = Field("out", description="the folder that receives <dir>/<recipe name>/")
    rows_per_shard: int = Field(100_000, gt=0, description="rows per parquet shard")


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="the mix's name and folder name")
    description: str = ""
    seed: int = Field(0, description="seeds every random choice: same recipe and seed, same bytes")
    license: str = Field("other", description="the license written in the data card")
    language: list[str] = Field(default_factory=lambda: ["en"])
    sources: list[SourceSpec] = Field(default_factory=list)
    generators: list[dict[str, Any]] = Field(default_factory=list, description="MAGPIE / Self-Instruct runs")
    preferences: dict[str, Any] | None = Field(None, description="responses, judge and binarization settings")
    curation: list[dict[str, Any]] = Field(default_factory=list, description="filter stages, in order")
    mix: MixSpec = Field(default_factory=MixSpec)
    output: OutputSpec = Field(default_factory=OutputSpec)
    training: dict[str, Any] | None = Field(None, description="optional SFT / DPO runs on the mix")
    iterative: IterativeSpec | None = Field(None, description="rounds of on-policy DPO (see pipeline/rounds.py)")
    rejection_sampling: list[dict[str, Any]] = Field(
        default_factory=list, description="N samples per problem, verified: correct traces or correct-vs-wrong pairs "
        "(see synth/rejection_sampling.py)"
    )
    task_runner: dict[str, Any] | None = Field(None, description="threads (default) or dask: {address: ...}")

    @model_validator(mode="after")
    def _names(self) -> Recipe:
        names = [s.name for s in self.sources] + [str(g.get("name")) for g in self.generators]
        sampled = [str(r.get("name")) for r in self.rejection_sampling]
        dupes = sorted({n for n in names + sampled if (names + sampled).count(n) > 1})
        if dupes:
            raise ValueError(f"source, generator and rejection_sampling names must be unique; repeated: {dupes}")
        for field, named in (("preferences.prompts", self.prompt_names()),
                             ("iterative.prompts", self.iterative.prompt_names() if self.iterative else []),
                             *((f"rejection_sampling.{r.get('name')}.prompts", _names_of(r.get("prompts")))
                               for r in self.rejection_sampling)):
            _known_parts(field, named, names)
        return self

    def prompt_names(self) -> list[str]:
        """The sources and generators `preferences.prompts` names ([] when it names none: the flow's default)."""
        named = (self.preferences or {}).get("prompts")
        if not named:
            return []
        return [named] if isinstance(named, str) else [str(n) for n in named]

    def recipe_hash(self) -> str:
        return hashlib.sha256(orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)).hexdigest()

    def out_dir(self) -> Path:
        return Path(self.output.dir) / self.name


def _names_of(named: Any) -> list[str]:
    return [] if not named else [named] if isinstance(named, str) else [str(n) for n in named]


def _known_parts(field: str, named: list[str], names: list[str]) -> None:
    unknown = [n for n in named if n not in names]
    if unknown:
        raise ValueError(
            f"{field} names {unknown}, which is no source or generator of this recipe (it has "
            f"{sorted(names)}): name a source (a prompt list such as ShareGPT first turns, or SFT and preference "
            "rows, whose prompts are answered again) or a generator"
        )


FIXES = {
    "extra_forbidden": "remove it, or check its spelling against the recipe reference in the README",
    "missing": "add it",
    "less_than_equal": "use a smaller value",
    "greater_than": "use a larger value",
    "greater_than_equal": "use a larger value",
    "less_than": "use a smaller value",
    "string_pattern_mismatch": "use letters, digits, '.', '_' and '-' only",
    "int_parsing": "give a whole number",
    "float_parsing": "give a number",
    "literal_error": "use one of the values listed",
    "value_error": "see the message",
}


def format_validation_error(err: ValidationError, origin: str) -> str:
    lines = [f"{origin}: the recipe is not valid:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        fix = FIXES.get(e["type"], "check the value against the README's recipe reference")
        lines.append(f"  {loc} = {shown}: {e['msg']} (fix: {fix})")
    return "\n".join(lines)


def parse_recipe(data: dict[str, Any], origin: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise RecipeError(f"{origin}: a recipe is a YAML mapping (name:, sources:, ...), got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, origin)) from None


def load_recipe(source: str | Path | dict[str, Any]) -> Recipe:
    """Load a recipe from a YAML path, a YAML string, or a dict. Relative `path:` entries are resolved
    against the recipe file's folder, so a recipe works from any working directory."""
    if isinstance(source, dict):
        return parse_recipe(source)
    text, origin, base = None, "<inline recipe>", None
    p = Path(str(source))
    if "\n" not in str(source) and p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise RecipeError(f"{p}: no such recipe file")
        text, origin, base = p.read_text(encoding="utf-8"), str(p), p.resolve().parent
    else:
        text = str(source)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{origin}: not valid YAML: {err}") from None
    recipe = parse_recipe(data, origin)
    if base is not None:
        for s in recipe.sources:
            s.path = _near(s.path, base)
        for section in (recipe.generators, recipe.curation):
            _resolve_paths(section, base)
    return recipe


PATH_KEYS = ("path", "seed_tasks")


def _near(path: str | None, base: Path) -> str | None:
    """A relative path that does not exist from the working directory but does from the recipe's folder."""
    if path and not Path(path).is_absolute() and not Path(path).exists() and (base / path).exists():
        return str(base / path)
    return path


def _resolve_paths(node: Any, base: Path) -> None:
    """Resolve file paths nested in recipe sections (seed task files, evaluation sets) like source paths."""
    if isinstance(node, list):
        for item in node:
            _resolve_paths(item, base)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in PATH_KEYS and isinstance(value, str):
                node[key] = _near(value, base)
            else:
                _resolve_paths(value, base)
