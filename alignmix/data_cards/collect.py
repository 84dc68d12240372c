"""What a card shows, gathered from what the build recorded (manifest.json and stats/*.json), plus the Hub
metadata of its README header and an offline check of that metadata.

    >>> card = load_card_data("out/demo")                                   # doctest: +SKIP
    >>> sorted(card)                                                                    # doctest: +SKIP
    ['ingest', 'length_bias', 'manifest', 'mix', 'review', 'stages']
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from alignmix.pipeline.rounds import load_round_metrics
from alignmix.pipeline.store import MixStore, read_json

# Task ids the Hub accepts in `task_categories` (the subset that describes post-training text data).
TASK_CATEGORIES = {
    "text-generation", "text-classification", "question-answering", "summarization", "translation",
    "conversational", "reinforcement-learning", "text2text-generation", "fill-mask", "table-question-answering",
    "zero-shot-classification", "token-classification", "feature-extraction", "sentence-similarity", "other",
}
# License ids of the Hub's license list that recipes are likely to use; "other" is always valid.
LICENSES = {
    "apache-2.0", "mit", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "cc-by-nc-sa-4.0", "cc0-1.0", "odc-by",
    "openrail", "llama2", "llama3", "llama3.1", "gemma", "bsd-3-clause", "gpl-3.0", "lgpl-3.0", "agpl-3.0",
    "cc-by-nd-4.0", "unlicense", "other", "unknown",
}
SIZE_STEPS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


class CardError(ValueError):
    """A mix directory that lacks what a card needs; the message names the missing file and how to make it."""


def load_card_data(mix_dir: str | Path) -> dict[str, Any]:
    store = MixStore(mix_dir)
    if not store.manifest_path.exists():
        raise CardError(f"{store.root}: no manifest.json; build the mix first (`alignmix mix RECIPE --out DIR`)")
    mix_path = store.stats_path("mix")
    if not mix_path.exists():
        raise CardError(f"{store.root}: no stats/mix.json; build the mix first (`alignmix mix RECIPE --out DIR`)")
    stats = store.all_stats()
    review = {f"stats/{k}.json": v for k, v in stats.items() if "review" in k}
    # `alignmix review DIR` (alignmix.filters.review) writes its human spot check here, after the mix is built.
    if (store.root / "review" / "summary.json").exists():
        review["review/summary.json"] = read_json(store.root / "review" / "summary.json")
    stages = {
        k: v for k, v in stats.items()
        if k != "mix" and not k.startswith("ingest-") and "review" not in k and isinstance(v, dict) and "rows_in" in v
    }
    return {
        "manifest": store.read_manifest(),
        "mix": read_json(mix_path),
        "ingest": {k.removeprefix("ingest-"): v for k, v in stats.items() if k.startswith("ingest-")},
        "review": review,
        "stages": stages,
        # A stage feeds the card's length-bias section by recording `length_bias` (filters/length.py's picture).
        "length_bias": {k: v["distributions"]["length_bias"] for k, v in stages.items()
                        if isinstance(v.get("distributions", {}).get("length_bias"), dict)},
        # `iterative:` recipes: one record per finished round (alignmix.pipeline.rounds), [] otherwise.
        "rounds": load_round_metrics(store.root),
    }


def size_category(n: int) -> str:
    for limit, name in SIZE_STEPS:
        if n < limit:
            return name
    return "n>1T" if n > 10**12 else "1B<n<10B"


def hub_metadata(card: dict[str, Any]) -> dict[str, Any]:
    """The README's YAML header, in the Hub's dataset-card fields, with one `configs` entry whose data files
    are the split shards, so `load_dataset` on the folder (or the Hub repo) finds the splits."""
    manifest = card["manifest"]
    kind = manifest["row_kind"]
    total = sum(manifest["splits"].values())
    return {
        "license": manifest.get("license") or "other",
        "language": list(manifest.get("language") or ["en"]),
        "task_categories": ["text-generation"],
        "size_categories": [size_category(total)],
        "pretty_name": manifest["name"],
        "tags": ["alignmix", "preference", "dpo"] if kind == "preference" else ["alignmix", "sft"],
        "configs": [
            {
                "config_name": "default",
                "data_files": [{"split": split, "path": f"data/{split}-*"} for split in manifest["splits"]],
            }
        ],
    }


def _resource_keys(name: str) -> set[str]:
    text = resources.files("datasets.utils.resources").joinpath(name).read_text(encoding="utf-8")
    return set(json.loads(text))


def validate_hub_metadata(meta: dict[str, Any]) -> list[str]:
    """Offline check of a card's metadata against the values the Hub accepts; returns the problems (none: valid).

    Languages and size categories come from the lists that `datasets` ships; `configs` goes through the same
    check `datasets` applies when it reads a card's data_files.
    """
    from datasets.utils.metadata import MetadataConfigs

    problems = []
    licenses = meta.get("license")
    for lic in [licenses] if isinstance(licenses, str) else (licenses or []):
        if lic not in LICENSES:
            problems.append(f"license {lic!r} is not a Hub license id")
    languages = _resource_keys("languages.json")
    for lang in meta.get("language") or []:
        if lang not in languages:
            problems.append(f"language {lang!r} is not an ISO 639 code the Hub knows")
    sizes = _resource_keys("size_categories.json")
    for size in meta.get("size_categories") or []:
        if size not in sizes:
            problems.append(f"size_categories {size!r} is not one of {sorted(sizes)}")
    for task in meta.get("task_categories") or []:
        if task not in TASK_CATEGORIES:
            problems.append(f"task_categories {task!r} is not a Hub task id")
    for config in meta.get("configs") or []:
        try:
            MetadataConfigs._raise_if_data_files_field_not_valid(config)
        except ValueError as err:
            problems.append(f"configs[{config.get('config_name')}]: {err}")
    return problems
