"""Every curation stage by the name a recipe's `curation:` list uses.

    curation:
      - {stage: exact_dedup, field: prompt}
      - {stage: near_dedup, threshold: 0.8}
      - {stage: consistency, min_margin: 1.0}

    >>> build_stage({"stage": "length", "max_length_ratio": 2.0}).config.max_length_ratio
    2.0
"""

from __future__ import annotations

from typing import Any

from alignmix.filters.consistency import PreferenceConsistency
from alignmix.filters.decontam import Decontaminate
from alignmix.filters.exact_dedup import ExactDedup
from alignmix.filters.language import LanguageID
from alignmix.filters.length import LengthFilter
from alignmix.filters.near_dedup import NearDedup
from alignmix.filters.quality import QualityFilter
from alignmix.filters.reasoning import ReasoningFilter
from alignmix.filters.verify import Verify
from alignmix.pipeline.stage import Stage

STAGES: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (ExactDedup, NearDedup, LengthFilter, PreferenceConsistency, LanguageID, Decontaminate, QualityFilter,
                ReasoningFilter, Verify)
}


def build_stage(spec: dict[str, Any]) -> Stage:
    """The stage a recipe entry names, with the rest of the entry as its config (validated; errors name the field)."""
    if not isinstance(spec, dict) or "stage" not in spec:
        raise ValueError(f"a curation entry needs `stage: <name>` (one of {', '.join(STAGES)}); got {spec!r}")
    config = {k: v for k, v in spec.items() if k != "stage"}
    name = spec["stage"]
    if name not in STAGES:
        raise ValueError(f"unknown curation stage {name!r}; use one of {', '.join(STAGES)}")
    return STAGES[name](config)
