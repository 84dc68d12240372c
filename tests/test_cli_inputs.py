"""Every command that reads rows reads what `alignmix ingest` reads: `dedup`, `filter`, `review`, `judge` and
`generate responses` on real files (JSONL, gzip JSONL, a JSON array, a save_to_disk folder), through the real
command line (typer's runner, same process). A raw input is ingested into the command's folder, which keeps
ingest's rejected rows and stats; rows alignmix wrote are read as they are; a bad input is one line, no traceback.

`judge` and `generate responses` run with a scripted backend in place of the model (the real responders, the
real `Judge.rate` and the real binarization around it), so no model is loaded.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import orjson
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from alignmix.cli import app
from alignmix.pipeline.inputs import read_input
from alignmix.pipeline.store import read_json
from alignmix.synth.backends.base import Backend, GenerationRequest, GenerationResult

runner = CliRunner()
WIDE = {"COLUMNS": "300"}  # rich wraps at the terminal width; keep each message on its line


def run(*args: str, input: str | None = None):
    result = runner.invoke(app, [str(a) for a in args], env=WIDE, input=input)
    assert "Traceback" not in result.output
    return result


def stats(folder: Path, stage: str) -> dict:
    s = read_json(folder / "stats" / f"{stage}.json")
    assert s["rows_in"] == s["rows_kept"] + sum(s["dropped"].values())
    return s


@pytest.fixture(scope="module")
def hh(shared_data) -> Path:
    return shared_data / "hh_rlhf/test_prefs.jsonl"  # 1,000 HH-RLHF pairs, 6 with chosen == rejected


# --- dedup and filter ---------------------------------------------------------------------------------------


def test_dedup_ingests_a_raw_jsonl_and_keeps_its_rejects(hh, tmp_path):
    out = tmp_path / "deduped"
    result = run("dedup", hh, "--out", out)
    assert result.exit_code == 0, result.output
    assert "(format hh_rlhf, preference rows): 1000 in, 996 kept, rejected: bad_role 2, empty_turn 2" in result.output

    ingest = stats(out, "ingest-test_prefs")
    assert (ingest["format"], ingest["rows_in"], ingest["rows_kept"]) == ("hh_rlhf", 1000, 996)
    assert ingest["dropped"] == {"bad_role": 2, "empty_turn": 2}
    rejected = pl.read_parquet(out / "rejected/ingest-test_prefs.parquet")
    assert sorted(rejected["drop_reason"].to_list()) == ["bad_role", "bad_role", "empty_turn", "empty_turn"]
    assert set(rejected["file"]) == {"test_prefs.jsonl"} and rejected["line"].null_count() == 0

    exact, near = stats(out, "exact_dedup"), stats(out, "near_dedup")
    assert (exact["rows_in"], exact["rows_kept"], exact["dropped"]) == (996, 982, {"exact_duplicate": 14})
    assert (near["rows_in"], near["rows_kept"], near["dropped"]) == (982, 975, {"near_duplicate": 7})
    assert pl.read_parquet(out / "data").height == 975

    # The folder dedup wrote is read as it is by the next command: no second ingest, the same rows.
    again = tmp_path / "again"
    result = run("dedup", out, "--out", again, "--exact-only")
    assert result.exit_code == 0, result.output
    assert f"read {out}: 975 rows written by alignmix" in result.output
    assert sorted(p.name for p in (again / "stats").iterdir()) == ["exact_dedup.json"]
    assert stats(again, "exact_dedup")["rows_in"] == 975


def test_a_gzip_jsonl_reads_like_the_plain_file(hh, tmp_path):
    packed = tmp_path / "test_prefs.jsonl.gz"
    packed.write_bytes(gzip.compress(hh.read_bytes()))
    result = run("dedup", packed, "--out", tmp_path / "out", "--exact-only")
    assert result.exit_code == 0, result.output
    ingest = stats(tmp_path / "out", "ingest-test_prefs")
    assert (ingest["rows_in"], ingest["rows_kept"], ingest["dropped"]) == (1000, 996, {"bad_role": 2, "empty_turn": 2})
    assert stats(tmp_path / "out", "exact_dedup")["rows_kept"] == 982


def test_filter_runs_stages_on_a_raw_jsonl(hh, tmp_path):
    out = tmp_path / "filtered"
    result = run("filter", hh, "--out", out, "--stage", "consistency")
    assert result.exit_code == 0, result.output
    assert stats(out, "ingest-test_prefs")["rows_kept"] == 996
    consistency = stats(out, "consistency")
    assert consistency["rows_in"] == 996
    assert consistency["dropped"]["identical_pair"] == 6  # the six pairs whose chosen and rejected are the same text
    rejected = pl.read_parquet(out / "rejected/consistency.parquet").filter(pl.col("drop_reason") == "identical_pair")
    assert all(c[-1]["content"] == r[-1]["content"] for c, r in zip(rejected["chosen"], rejected["rejected"]))
    assert pl.read_parquet(out / "data").height == consistency["rows_kept"]


def test_a_json_array_is_ingested(shared_data, tmp_path):
    out = tmp_path / "alpaca"
    result = run("dedup", shared_data / "llama_factory/alpaca_en_demo.json", "--out", out, "--on", "first_user")
    assert result.exit_code == 0, result.output
    ingest = stats(out, "ingest-alpaca_en_demo")
    assert (ingest["format"], ingest["kind"]) == ("alpaca", "sft")
    assert (ingest["rows_in"], ingest["rows_kept"], ingest["dropped"]) == (999, 985, {"duplicate_content": 14})
    assert pl.read_parquet(out / "rejected/ingest-alpaca_en_demo.parquet").height == 14
    assert stats(out, "exact_dedup")["rows_in"] == 985


def test_a_save_to_disk_folder_is_ingested(shared_data, tmp_path):
    import datasets

    rows = [orjson.loads(line) for line in (shared_data / "ultrafeedback/eval_clean.jsonl").read_bytes().splitlines()[:20]]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "uf_disk"))
    out = tmp_path / "out"
    result = run("dedup", tmp_path / "uf_disk", "--out", out, "--exact-only")
    assert result.exit_code == 0, result.output
    ingest = stats(out, "ingest-uf_disk")
    assert (ingest["kind"], ingest["rows_in"], ingest["rows_kept"]) == ("preference", 20, 20)
    assert pl.read_parquet(out / "data")["prompt"].to_list() == [r["prompt"] for r in rows]


def test_a_hub_layout_folder_and_an_hf_id_are_ingested(shared_data, tmp_path, monkeypatch):
    """A Hub-layout repository (data/train-*.parquet of Alpaca records, not alignmix rows) by folder and by
    hf:<id> (a local path: tests have no network)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "alpaca_repo"
    (repo / "data").mkdir(parents=True)
    records = orjson.loads((shared_data / "llama_factory/alpaca_en_demo.json").read_bytes())[:300]
    pq.write_table(pa.Table.from_pylist(records), repo / "data/train-00000-of-00001.parquet")
    for source, out in ((repo, tmp_path / "by_folder"), (f"hf:{repo}:train", tmp_path / "by_id")):
        result = run("dedup", source, "--out", out, "--exact-only")
        assert result.exit_code == 0, result.output
        ingest = stats(out, "ingest-alpaca_repo")
        assert (ingest["format"], ingest["rows_in"], ingest["rows_kept"]) == ("alpaca", 300, 299)
        assert ingest["dropped"] == {"duplicate_content": 1}
    assert pl.read_parquet(tmp_path / "by_id/rejected/ingest-alpaca_repo.parquet")["file"].to_list() == [f"hf:{repo}:train"]


def test_a_parquet_file_alignmix_wrote_is_read_as_it_is(shared_data, tmp_path):
    first = tmp_path / "first"
    assert run("dedup", shared_data / "ultrafeedback/eval_clean.jsonl", "--out", first).exit_code == 0
    shard = next((first / "data").glob("*.parquet"))
    direct = read_input(shard, tmp_path / "unused")
    assert direct.ingested is None and not (tmp_path / "unused").exists()
    assert_frame_equal(direct.frame, pl.read_parquet(shard))

    out = tmp_path / "length"
    result = run("filter", shard, "--out", out, "--stage", "length")
    assert result.exit_code == 0, result.output
    assert f"read {shard}: {direct.frame.height} rows written by alignmix" in result.output
    assert not list((out / "stats").glob("ingest-*"))
    assert stats(out, "length")["rows_in"] == direct.frame.height


def test_format_forces_an_adapter(shared_data, tmp_path):
    out = tmp_path / "out"
    result = run("dedup", shared_data / "ultrafeedback/eval_clean.jsonl", "--out", out, "--format", "openai")
    assert result.exit_code == 0, result.output
    ingest = stats(out, "ingest-eval_clean")  # pairs read as chat messages: every record lacks `messages`
    assert (ingest["format"], ingest["rows_in"], ingest["rows_kept"], ingest["dropped"]) == (
        "openai", 200, 0, {"missing_field": 200})
    listed = run("filter", "--format", "help")
    assert listed.exit_code == 0 and "hh_rlhf" in listed.output and "alpaca" in listed.output


# --- bad inputs ---------------------------------------------------------------------------------------------


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_a_file_of_no_known_format_is_one_line_naming_it(shared_data, tmp_path):
    text_only = shared_data / "dedup/demo-dataset-deduplication.jsonl"  # {"text": ...}: a pretraining file
    line = _one_line_error(run("dedup", text_only, "--out", tmp_path / "o"))
    assert f"{text_only}: the records (fields ['text']) match no format" in line
    assert "hh_rlhf" in line and "--format NAME" in line


def test_garbage_and_missing_files_are_one_line(tmp_path):
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(bytes(range(256)) * 8 + b"\n\x00\xff\n")
    line = _one_line_error(run("dedup", garbage, "--out", tmp_path / "o"))
    assert str(garbage) in line and "--format" in line

    fake = tmp_path / "rows.parquet"
    fake.write_text("not parquet")
    line = _one_line_error(run("filter", fake, "--out", tmp_path / "o", "--stage", "length"))
    assert f"{fake}: not a readable parquet file" in line

    missing = tmp_path / "nowhere.jsonl"
    for command in (["dedup"], ["filter", "--stage", "length"], ["judge"], ["generate", "responses"]):
        line = _one_line_error(run(*command, missing, "--out", tmp_path / "o"))
        assert line == f"error: {missing}: does not exist (give a file, a folder, or hf:<dataset id>[:<split>])"
    line = _one_line_error(run("review", missing))
    assert f"{missing}: does not exist" in line

    line = _one_line_error(run("dedup", garbage, "--out", tmp_path / "o", "--format", "nope"))
    assert "unknown format 'nope'" in line and "alpaca" in line


# --- review -------------------------------------------------------------------------------------------------


def test_review_reads_a_raw_jsonl(shared_data, tmp_path, monkeypatch):
    uf = shared_data / "ultrafeedback/eval_clean.jsonl"
    out = tmp_path / "review_uf"
    result = run("review", uf, "--out", out, "--sample", "3", input="a\nb\nt\n")
    assert result.exit_code == 0, result.output
    assert stats(out, "ingest-eval_clean")["rows_kept"] == 200
    summary = read_json(out / "review/summary.json")
    assert summary["reviewed"] == 3 and sum(summary["counts"].values()) == 3
    verdicts = [orjson.loads(line) for line in (out / "review/verdicts.jsonl").read_bytes().splitlines()]
    assert {v["id"] for v in verdicts} <= set(pl.read_parquet(out / "data")["id"])

    # Without --out, a raw file goes to ./<name>-review; a folder alignmix wrote is reviewed in place.
    monkeypatch.chdir(tmp_path)
    assert run("review", uf, "--sample", "1", input="q\n").exit_code == 0
    assert (tmp_path / "eval_clean-review/stats/ingest-eval_clean.json").exists()
    assert run("review", out, "--sample", "1", input="u\n").exit_code == 0
    assert len((out / "review/verdicts.jsonl").read_bytes().splitlines()) == 4


def test_review_of_sft_rows_says_so(shared_data, tmp_path):
    result = run("review", shared_data / "llama_factory/alpaca_en_demo.json", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "holds SFT rows" in result.output


# --- generate responses and judge (scripted backend, no model) ----------------------------------------------


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ScriptedBackend(Backend):
    """Responders answer "Answer to: <prompt>"; the judge rates 5 the answers in `good`, 2 the others."""

    name = "scripted"

    def __init__(self, good: set[str] = frozenset()):
        super().__init__("scripted-model")
        self.good = good
        self.requests: list[GenerationRequest] = []

    def chat_template(self) -> str:
        return CHATML

    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": "", "eos_token": "<|im_end|>"}

    def _generate(self, requests, progress):
        self.requests += requests
        out = []
        for r in requests:
            if r.messages is not None:
                out.append(GenerationResult(f"Answer to: {r.messages[-1]['content']}", "stop", 10, 4))
            else:
                answer = r.prompt.split("\n\nAnswer:\n", 1)[1].split("\n\nReply in exactly this format:")[0]
                out.append(GenerationResult(f" {5 if answer in self.good else 2}\nRationale: scripted.", "stop", 50, 4))
        if progress:
            progress(len(out), sum(o.completion_tokens for o in out))
        return out


def _script(monkeypatch, backend: ScriptedBackend) -> ScriptedBackend:
    for module in ("alignmix.synth.judge", "alignmix.synth.responses"):
        monkeypatch.setattr(f"{module}.get_backend", lambda spec, **kw: backend)
    return backend


def test_generate_responses_reads_prompts_from_a_raw_jsonl(shared_data, tmp_path, monkeypatch):
    backend = _script(monkeypatch, ScriptedBackend())
    uf = shared_data / "ultrafeedback/eval_clean.jsonl"
    out = tmp_path / "responses"
    result = run("generate", "responses", uf, "--out", out, "--limit", "3", "--temperatures", "0.3,1.0")
    assert result.exit_code == 0, result.output
    assert stats(out, "ingest-eval_clean")["rows_in"] == 200
    first3 = [orjson.loads(line)["prompt"] for line in uf.read_bytes().splitlines()[:3]]
    assert [r.messages[-1]["content"] for r in backend.requests] == first3 * 2  # one pass per responder
    rows = pl.read_parquet(out / "data")
    assert rows.height == 3  # the two temperatures give the same text: the second is rejected as a duplicate
    assert [(m[0]["content"], m[1]["content"][:11]) for m in rows["messages"].to_list()] == [(p, "Answer to: ") for p in first3]


def test_a_bad_setting_fails_before_the_input_is_read(hh, tmp_path):
    out = tmp_path / "responses"
    result = run("generate", "responses", hh, "--out", out, "--temperatures", "0.7")  # one response: no pair
    assert result.exit_code == 2 and "at least 2 responses per prompt" in result.output
    assert "read " not in result.output and not out.exists()


def test_judge_rates_a_raw_preference_file_and_binarizes_it_back(shared_data, tmp_path, monkeypatch):
    """Both sides of each pair become responses to one prompt; a judge that prefers the original chosen
    answers binarizes every pair back to the original label."""
    lines = (shared_data / "ultrafeedback/eval_clean.jsonl").read_bytes().splitlines()[:5]
    pairs = [orjson.loads(line) for line in lines]
    raw = tmp_path / "uf5.jsonl"
    raw.write_bytes(b"\n".join(lines) + b"\n")
    chosen = {p["chosen"] for p in pairs}  # the `pairs` format: prompt, chosen and rejected as strings
    backend = _script(monkeypatch, ScriptedBackend(good=chosen))
    config = tmp_path / "prefs.yaml"
    config.write_text("judge: {rating: parsed, aspects: [helpfulness]}\n")
    out = tmp_path / "judged"
    result = run("judge", raw, "--out", out, "--binarize", "--rejected", "lowest", "--config", config)
    assert result.exit_code == 0, result.output
    assert stats(out, "ingest-uf5")["rows_kept"] == 5
    assert len(backend.requests) == 10  # two responses per prompt, one aspect each
    made = pl.read_parquet(out / "data")
    assert made.height == 5
    by_prompt = {r["prompt"]: r for r in made.iter_rows(named=True)}
    for p in pairs:
        row = by_prompt[p["prompt"]]
        assert (row["chosen"][-1]["content"], row["rejected"][-1]["content"]) == (p["chosen"], p["rejected"])
        assert (row["score_chosen"], row["score_rejected"]) == (5.0, 2.0)


def test_judge_groups_sft_answers_by_prompt(tmp_path, monkeypatch):
    """SFT rows from elsewhere name no prompt_id: answers to the same prompt are grouped by their prompt turns."""
    raw = tmp_path / "answers.jsonl"
    records = [("What is 2+2?", "4"), ("What is 2+2?", "5"), ("Name a colour.", "Blue")]
    raw.write_bytes(b"".join(orjson.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                             + b"\n" for q, a in records))
    _script(monkeypatch, ScriptedBackend(good={"4", "Blue"}))
    config = tmp_path / "prefs.yaml"
    config.write_text("judge: {rating: parsed, aspects: [helpfulness]}\n")
    out = tmp_path / "judged"
    result = run("judge", raw, "--out", out, "--binarize", "--config", config)
    assert result.exit_code == 0, result.output
    made = pl.read_parquet(out / "data")
    assert made.select("prompt", pl.col("chosen").list.last().struct.field("content").alias("c"),
                       pl.col("rejected").list.last().struct.field("content").alias("r")).rows() == [("What is 2+2?", "4", "5")]


# --- help ---------------------------------------------------------------------------------------------------


def test_help_says_what_each_command_reads():
    top = " ".join(run("--help").output.split())
    assert "hf:<dataset id>[:<split>]" in top and "save_to_disk" in top
    for command in (["dedup"], ["filter"], ["review"], ["judge"], ["generate", "responses"]):
        shown = run(*command, "--help")
        assert shown.exit_code == 0
        text = " ".join(shown.output.replace("│", " ").split())
        assert "anything `alignmix ingest` reads" in text and "--format" in text, (command, text)


@pytest.mark.slow
def test_generate_responses_from_a_raw_file_with_the_default_model(hh, tmp_path):
    """One real call: the default model answers the first HH-RLHF prompt, read from the raw JSONL."""
    out = tmp_path / "responses"
    result = run("generate", "responses", hh, "--out", out, "--limit", "1", "--temperatures", "0.3,1.3",
                 "--max-new-tokens", "4")
    assert result.exit_code == 0, result.output
    assert stats(out, "ingest-test_prefs")["rows_kept"] == 996
    first = read_input(hh).frame.row(0, named=True)
    rows = pl.read_parquet(out / "data")
    rejected = pl.read_parquet(out / "rejected/responses.parquet")
    assert rows.height + rejected.height == 2  # two temperatures; a repeated or empty answer is rejected, not lost
    assert all(m.to_list()[:-1] == first["chosen"][:-1] for m in rows["messages"])
    assert {orjson.loads(m)["finish_reason"] for m in rows["meta"]} <= {"stop", "length"}
