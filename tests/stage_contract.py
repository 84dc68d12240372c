"""The one shared check of the stage contract, reused by every stage's tests.

    result = assert_stage_contract(MyStage(config), frame)
"""

from __future__ import annotations

import polars as pl

from alignmix.pipeline.stage import Stage, StageResult


def assert_stage_contract(stage: Stage, frame: pl.DataFrame) -> StageResult:
    """Run `stage` on `frame` and check DESIGN.md's invariants; return the result for further asserts.

    - rows in = kept + rejected, and stats say the same;
    - every input id comes out exactly once (no id twice, none lost, none invented);
    - every rejected row has drop_stage (= the stage's name), a non-empty drop_reason and a drop_detail;
    - rejected rows keep every input column; kept rows keep every input column.
    """
    result = stage.run(frame)
    kept, rejected, stats = result
    assert frame.height == kept.height + rejected.height, (frame.height, kept.height, rejected.height)
    assert stats.rows_in == frame.height
    assert stats.rows_kept == kept.height
    assert sum(stats.dropped.values()) == rejected.height
    if "id" in frame.columns:
        ids_out = kept["id"].to_list() + rejected["id"].to_list()
        assert len(ids_out) == len(set(ids_out)), "an id appears twice in the stage's output"
        assert sorted(ids_out) == sorted(frame["id"].to_list()), "the stage lost or invented rows"
    for col in frame.columns:
        assert col in kept.columns, f"kept rows lost column {col!r}"
        assert col in rejected.columns, f"rejected rows lost column {col!r}"
    for col in ("drop_stage", "drop_reason", "drop_detail"):
        assert col in rejected.columns
        assert col not in kept.columns
    if rejected.height:
        assert rejected["drop_stage"].unique().to_list() == [stage.name]
        assert rejected["drop_reason"].null_count() == 0
        assert (rejected["drop_reason"].str.len_chars() > 0).all()
        assert rejected["drop_detail"].null_count() == 0, "every drop records the value that decided it"
        for reason, n in stats.dropped.items():
            assert rejected.filter(pl.col("drop_reason") == reason).height == n
    return result
