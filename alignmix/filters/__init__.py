"""Curation filters: each one a stage (kept, rejected, stats) that explains every drop.

    from alignmix.filters import build_stage
    result = build_stage({"stage": "near_dedup", "threshold": 0.8}).run(frame)
"""

from alignmix.filters.registry import STAGES, build_stage

__all__ = ["STAGES", "build_stage"]
