"""Synthetic data: generation backends, MAGPIE, Self-Instruct, responses, judges, binarization.

The flow layer calls two functions:

    run_generator(spec, out_dir)                  a recipe `generators` entry (kind: magpie | self_instruct |
                                                  arithmetic_problems)
    build_preferences(prompts, spec, out_dir)     the recipe's `preferences` section

Both write data/, rejected/<stage>.parquet and stats/<stage>.json into `out_dir`, per batch, and resume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignmix.synth.rouge import RougeFilter, rouge_l


def run_generator(spec: dict[str, Any], out_dir: str | Path, *, progress: bool = False, backend: Any = None) -> dict[str, Any]:
    """Run one recipe `generators` entry into `out_dir`; return the stage's stats (rows kept, drops by reason,
    tokens, tokens/s, model, template). A rerun skips finished batches; a finished run returns at once."""
    from alignmix.synth.arithmetic_problems import run_arithmetic_problems
    from alignmix.synth.config import parse_generator
    from alignmix.synth.magpie import run_magpie
    from alignmix.synth.self_instruct import run_self_instruct

    cfg = parse_generator(spec)
    run = {"magpie": run_magpie, "self_instruct": run_self_instruct, "arithmetic_problems": run_arithmetic_problems}[cfg.kind]
    return run(cfg, out_dir, progress=progress, backend=backend)


def build_preferences(prompts: Any, spec: dict[str, Any], out_dir: str | Path, *, progress: bool = False) -> dict[str, Any]:
    """Responses, judge and binarization (see alignmix.synth.preferences.build_preferences)."""
    from alignmix.synth.preferences import build_preferences as _build

    return _build(prompts, spec, out_dir, progress=progress)


__all__ = ["RougeFilter", "build_preferences", "rouge_l", "run_generator"]
