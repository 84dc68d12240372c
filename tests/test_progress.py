"""Progress a person can watch: the log-line sink's timing and arithmetic, progress lines from the flow's
generation task and from curation (rows scored per shard), training steps, and the CLI's rich bar.

No model runs: MAGPIE talks to a scripted backend whose answers are fixed, so counts are known in advance.
"""

from __future__ import annotations

import re

import pytest
from rich.console import Console
from typer.testing import CliRunner

from alignmix.filters.apply import run_stages
from alignmix.filters.registry import build_stage
from alignmix.pipeline.progress import progress_bars, progress_line, progress_log, track
from alignmix.pipeline.store import MixStore
from alignmix.synth.backends.base import Backend, GenerationRequest, GenerationResult

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedMagpie(Backend):
    """Every pre-query prompt gets a question (6 tokens), every conversation an answer (4 tokens)."""

    name = "scripted"

    def __init__(self) -> None:
        super().__init__("scripted-model")

    def chat_template(self) -> str:
        return CHATML

    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": "", "eos_token": "<|im_end|>"}

    def _generate(self, requests: list[GenerationRequest], progress) -> list[GenerationResult]:
        out = []
        for r in requests:
            if r.messages is None:
                out.append(GenerationResult(f"How do I sort list number {r.params.seed}?", "stop", 20, 6))
            else:
                out.append(GenerationResult("Call sorted() on it.", "stop", 30, 4))
            if progress:  # one call per finished request, as the vLLM backend reports
                progress(1, out[-1].completion_tokens)
        return out


MAGPIE = {"kind": "magpie", "name": "demo_magpie", "count": 5, "requests_per_batch": 2, "seed": 1,
          "instruction": {"max_new_tokens": 16}, "response": {"max_new_tokens": 16}}  # fmt: skip


@pytest.fixture()
def scripted(monkeypatch):
    backend = ScriptedMagpie()
    monkeypatch.setattr("alignmix.synth.magpie.get_backend", lambda spec, **kw: backend)
    return backend


def test_log_lines_come_at_most_every_n_seconds_with_rows_rate_and_eta():
    clock, lines = FakeClock(), []
    with progress_log(lines.append, every=30, clock=clock):
        with track("magpie demo", 20_000, unit="requests") as t:
            clock.now += 10
            t.advance(100, 4_000)  # 10 s in: too soon for a line
            clock.now += 20
            t.advance(924, 8_360)  # 30 s in: 1,024 done, 12,360 tokens / 30 s = 412 tok/s
            clock.now += 15
            t.advance(1_000, 1_000)  # 15 s after the last line: none
            clock.now += 15
            t.advance(976, 6_640)  # 60 s in: 3,000 done, 20,000 tokens
            clock.now += 1
    eta = (20_000 - 1_024) * 30 / 1_024  # 556 s
    assert round(eta) == 556
    assert lines == [
        "magpie demo: 1,024/20,000 requests, 412 tok/s, ETA 9m",
        "magpie demo: 3,000/20,000 requests, 333 tok/s, ETA 5m",  # 17,000 left at 50 per second: 340 s
    ]  # no closing line: nothing moved since the last one


def test_line_arithmetic_hours_finished_and_without_tokens():
    assert progress_line("judge", 500, 20_000, "requests", 0, 100.0) == "judge: 500/20,000 requests, 5.0 requests/s, ETA 1h05m"
    assert progress_line("curate quality", 60, 60, "rows", 0, 3.0) == "curate quality: 60/60 rows, 20.0 rows/s, done in 3s"
    assert progress_line("read", 7, None, "rows", 0, 2.0) == "read: 7 rows, 3.5 rows/s"
    assert progress_line("magpie", 0, 10, "requests", 0, 5.0) == "magpie: 0/10 requests, 0.0 requests/s"


def test_without_a_sink_a_tracker_only_counts():
    with track("quiet", 3) as t:
        t.advance(2, 7)
    assert (t.done, t.tokens, t._bar) == (2, 7, None)


def test_the_flows_generation_task_logs_progress_through_the_run_logger(scripted, monkeypatch, tmp_path):
    """generate_task as the flow runs it: progress lines go to the run logger the flow hands the library."""
    from alignmix.flows import build
    from alignmix.pipeline.recipe import parse_recipe

    logged: list[str] = []

    class RunLogger:
        def info(self, msg, *args):
            logged.append(msg % args if args else msg)

    monkeypatch.setattr(build, "get_run_logger", lambda: RunLogger())
    monkeypatch.setattr(build, "PROGRESS_EVERY", 0.0)  # a line at every update: counts, not timing, are asserted
    recipe = parse_recipe({"name": "progress", "generators": [MAGPIE], "output": {"dir": str(tmp_path)}})
    out = build.generate_task.fn(recipe, "demo_magpie")

    progress = [line for line in logged if line.startswith("magpie demo_magpie:")]
    done = [int(re.match(r"magpie demo_magpie: (\d+)/10 requests", line).group(1)) for line in progress]
    # 5 conversations, one turn: 5 questions and 5 answers, reported one request at a time.
    assert done == list(range(1, 11))
    assert "ETA" in progress[0] and "tok/s" in progress[0] and "done in" in progress[-1]
    assert logged[-1] == "generator demo_magpie: 5 rows kept"

    # The rows it wrote, curated in shards of 2: one line per shard scored.
    rows = MixStore(out).read()
    assert rows.height == 5
    lines: list[str] = []
    with progress_log(lines.append, every=0):
        kept = run_stages(rows, [build_stage({"stage": "quality"})], MixStore(tmp_path / "curated"), shard_rows=2)
    assert kept.height == 5
    assert [re.match(r"curate quality: (\d+)/5 rows", line).group(1) for line in lines] == ["2", "4", "5"]


def test_cli_generate_shows_a_rich_bar(scripted, monkeypatch, tmp_path):
    from alignmix import cli

    monkeypatch.setattr(cli, "console", Console(force_terminal=True, width=160, color_system=None))
    result = CliRunner().invoke(cli.app, ["generate", "magpie", "--out", str(tmp_path / "m"), "--count", "3"])
    assert result.exit_code == 0, result.output
    bar = [line for line in result.output.splitlines() if "magpie" in line and "requests" in line]
    assert bar and "6/6 requests" in bar[-1] and "tok/s" in bar[-1]  # 3 questions + 3 answers, 10 tokens each pair


def test_progress_bars_follow_the_caller_and_a_bar_can_be_forced_off():
    console = Console(force_terminal=True, width=120, color_system=None, record=True)
    with progress_bars(True, console):
        with track("curate quality", 4) as t:
            t.advance(4)
        with track("train-sft", 2, unit="steps", bar=False) as quiet:
            quiet.advance(2)
    text = console.export_text()
    assert "curate quality" in text and "4/4 rows" in text
    assert "train-sft" not in text and quiet._bar is None


def test_training_callback_reports_steps_loss_and_eta():
    from transformers import TrainerState, TrainingArguments

    from alignmix.training.progress import TrainingProgress

    clock, lines = FakeClock(), []
    state = TrainerState(max_steps=4, global_step=0)
    cb = TrainingProgress("train-sft")
    args = TrainingArguments(output_dir="unused", report_to="none")
    with progress_log(lines.append, every=30, clock=clock):
        cb.on_train_begin(args, state, None)
        for step in range(1, 5):
            clock.now += 20
            state.global_step = step
            state.num_input_tokens_seen = 512 * step
            if step == 2:
                cb.on_log(args, state, None, logs={"loss": 2.5, "learning_rate": 1e-4})
            cb.on_step_end(args, state, None)
        cb.on_train_end(args, state, None)
    assert lines == [
        "train-sft: 2/4 steps, 26 tok/s, ETA 40s, loss 2.5",  # 40 s in: 1,024 tokens, 2 steps left at 20 s each
        "train-sft: 4/4 steps, 26 tok/s, done in 1m, loss 2.5",  # 80 s in; the closing line would repeat it
    ]


def test_a_bad_row_in_logs_does_not_matter_only_loss_is_read():
    from transformers import TrainerState, TrainingArguments

    from alignmix.training.progress import TrainingProgress

    cb = TrainingProgress("train-dpo")
    state = TrainerState(max_steps=1, global_step=0)
    args = TrainingArguments(output_dir="unused", report_to="none")
    cb.on_train_begin(args, state, None)
    cb.on_log(args, state, None, logs={"train_runtime": 1.0})
    assert cb.tracker is not None and cb.tracker.fields == {}
    cb.on_train_end(args, state, None)
    assert cb.tracker is None




def test_a_closing_line_when_the_step_ends_between_two_lines():
    clock, lines = FakeClock(), []
    with progress_log(lines.append, every=30, clock=clock):
        with track("curate near_dedup", 90) as t:
            clock.now += 12
            t.advance(90)
    assert lines == ["curate near_dedup: 90/90 rows, 7.5 rows/s, done in 12s"]


@pytest.mark.slow
def test_real_sft_reports_every_step_with_tokens_and_loss(shared_data, tmp_path):
    """The callback in a real SFTTrainer run (default model, real Alpaca rows): one line per step with its rate
    (steps/s: counting tokens through transformers would put `train_runtime` in every step's log, which
    MetricsCallback reads as the end of training), the loss from the trainer's log."""
    from alignmix.training import train_sft
    from alignmix.training.config import load_config
    from tests.training.conftest import build_mix

    mix = build_mix(shared_data, tmp_path / "mix", "sft", n_train=4, n_test=2)
    cfg = load_config("sft", overrides=["batch_size=2", "max_length=64", "warmup_ratio=0", "eval_rows=0",
                                        "generations=0", "max_steps=3", "logging_steps=1"])
    lines: list[str] = []
    with progress_log(lines.append, every=0):
        train_sft(mix, tmp_path / "run", cfg)
    steps = [line for line in lines if line.startswith("train-sft:")]
    assert [re.match(r"train-sft: (\d)/3 steps", line).group(1) for line in steps] == ["1", "2", "3"]
    assert all("steps/s" in line for line in steps)
    assert "done in" in steps[-1] and re.search(r"loss \d", steps[-1])


def test_cli_mix_shows_a_bar_per_curation_stage_in_a_terminal(shared_data, monkeypatch, tmp_path):
    import yaml

    from alignmix import cli

    recipe = {
        "name": "barmix",
        "sources": [{"name": "uf", "path": str(shared_data / "ultrafeedback/eval_clean.jsonl"), "limit": 120}],
        "curation": [{"stage": "exact_dedup", "field": "prompt"}, {"stage": "quality"}],
        "mix": {"sources": {"uf": {"fraction": 1.0}}},
        "task_runner": {"shard_rows": 50},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(cli, "console", Console(force_terminal=True, width=160, color_system=None))
    result = CliRunner().invoke(cli.app, ["mix", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    kept = int(re.search(r"exact_dedup: 120 in, (\d+) kept", result.output).group(1))
    for stage, rows in (("exact_dedup", 120), ("quality", kept)):
        assert f"curate {stage}" in result.output and f"{rows}/{rows} rows" in result.output
