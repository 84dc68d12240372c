"""`alignmix ingest` and `alignmix inspect` through the real command line (typer's runner, same process)."""

from __future__ import annotations

import polars as pl
from typer.testing import CliRunner

from alignmix.cli import app

runner = CliRunner()


def test_ingest_then_inspect(shared_data, tmp_path):
    out = tmp_path / "uf"
    result = runner.invoke(app, ["ingest", str(shared_data / "ultrafeedback/eval_clean.jsonl"), "--out", str(out),
                                 "--name", "uf", "--rows-per-shard", "150"])
    assert result.exit_code == 0, result.output
    assert "pairs" in result.output and "200" in result.output
    assert sorted(p.name for p in (out / "data").iterdir()) == ["train-00000-of-00002.parquet",
                                                               "train-00001-of-00002.parquet"]
    assert pl.read_parquet(out / "data").get_column("source").unique().to_list() == ["uf"]
    assert (out / "stats/ingest-uf.json").exists() and (out / "rejected/ingest-uf.parquet").exists()

    shown = runner.invoke(app, ["inspect", str(out), "--rows", "1"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "train" in shown.output and "200" in shown.output
    assert "score_chosen" in shown.output  # the schema
    assert "Write a Java program that prompts the user" in shown.output  # the first row


def test_inspect_shows_rejected_reasons(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a", "output": "b"}\n{"instruction": \n')
    assert runner.invoke(app, ["ingest", str(bad), "--out", str(tmp_path / "out")]).exit_code == 0
    shown = runner.invoke(app, ["inspect", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "duplicate_content" in shown.output and "malformed_json" in shown.output


def test_errors_exit_2_with_one_clear_message(shared_data, tmp_path):
    result = runner.invoke(app, ["ingest", str(shared_data / "evals/gsm8k_test.jsonl"), "--out", str(tmp_path / "o")],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "gsm8k_test.jsonl: the records (fields ['answer', 'question']) match no format" in result.output
    assert "self_instruct" in result.output
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nowhere")], env={"COLUMNS": "200"})
    assert missing.exit_code == 2 and "no such folder" in missing.output


def test_format_help_lists_every_format():
    from alignmix.pipeline.adapters import ADAPTERS

    result = runner.invoke(app, ["ingest", "--format", "help"])
    assert result.exit_code == 0
    assert all(name in result.output for name in ADAPTERS)


def test_several_sources_go_to_their_own_folders_and_inspect_shows_all(shared_data, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(app, ["ingest", str(shared_data / "self_instruct/seed_tasks.jsonl"),
                                 str(shared_data / "llama_factory/alpaca_zh_demo.json"), "--out", str(out)],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out / "seed_tasks/data").height == 175
    assert pl.read_parquet(out / "alpaca_zh_demo/data").height == 992
    shown = runner.invoke(app, ["inspect", str(out), "--rows", "0"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "ingest-seed_tasks: 175 in, 175 kept (format self_instruct, sft)" in shown.output
    assert "ingest-alpaca_zh_demo: 1,000 in, 992 kept (format alpaca, sft)" in shown.output
