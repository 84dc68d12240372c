"""The training flow's log holds what training says, not Python bytecode.

Under a parent flow with `log_prints=True` (the main build flow), Prefect's print patch used to catch the
`dis.dis` output that dill's `nestedglobals` prints into a captured stdout while `datasets` hashes TRL's map
functions: hundreds of `LOAD_FAST` / `RETURN_VALUE` lines in the run log. The training flows turn log_prints off.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import yaml

from tests.training.conftest import build_mix

pytestmark = pytest.mark.slow

BYTECODE = re.compile(r"\b(LOAD_FAST|LOAD_GLOBAL|LOAD_CONST|RETURN_VALUE|RETURN_GENERATOR|RESUME|CALL)\b")


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.extend(record.getMessage().splitlines())


def test_the_training_flow_logs_no_bytecode_under_a_flow_that_logs_prints(shared_data, tmp_path):
    from prefect import flow
    from prefect.testing.utilities import prefect_test_harness

    from alignmix.flows.build import train_sft_flow

    recipe = tmp_path / "logs.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "logs", "output": {"dir": str(tmp_path / "out")},
        "training": {"sft": {"max_steps": 1, "batch_size": 2, "max_length": 64, "eval_rows": 0, "generations": 0}},
    }))  # fmt: skip
    build_mix(shared_data, tmp_path / "out" / "logs", "sft", n_train=2, n_test=1)

    @flow(log_prints=True)
    def build_like_the_demo(path: str):
        print("the parent logs its prints")
        return train_sft_flow(path)

    lines = _Lines()
    with prefect_test_harness(server_startup_timeout=300):  # 2 shared cores: the server can be slow to start
        logger = logging.getLogger("prefect")
        logger.addHandler(lines)
        try:
            result = build_like_the_demo(str(recipe))
        finally:
            logger.removeHandler(lines)
    assert result["train"]["steps"] == 1 and Path(result["adapter"]).exists()
    assert "the parent logs its prints" in lines.lines
    assert any("train-sft: adapter at" in line for line in lines.lines)
    assert [line for line in lines.lines if BYTECODE.search(line)] == []
