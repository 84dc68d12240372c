"""Ingest end to end: a corpus of broken rows, byte-identical reruns, resume, and whole-source errors."""

from __future__ import annotations

import gzip
import json

import datasets
import orjson
import polars as pl
import pytest

from alignmix.pipeline.ingest import IngestError, SeenIds, ingest_source, ingest_sources, source_name
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.store import MixStore, sha256_file

U, A = "user", "assistant"


def conv(*turns):
    return {"messages": [{"role": r, "content": c} for r, c in turns]}


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode()


# One line per rule, and every good row kept. (line number, expected reason or None)
BROKEN = [
    (line(conv((U, "What is 2+2?"), (A, "4"))), None),
    (b'{"messages": [{"role": "user", "content": "unterminated', "malformed_json"),
    (line({"text": "no messages field"}), "missing_field"),
    (line({"messages": "a string, not a list"}), "bad_type"),
    (line(conv((U, "Say something."), (A, "   "))), "empty_turn"),
    (line(conv((A, "Hello."), (U, "Bye."))), "not_ending_with_assistant"),
    ('{"messages": [{"role": "user", "content": "caf\u00e9?"}, {"role": "assistant", "content": "yes"}]}'
     .encode("latin-1"), "invalid_utf8"),
    (b"", None),  # blank: not a record
    (line(conv((U, "Line\u2028separator inside"), (A, "kept whole"))), None),
    (line(conv((U, "What is 2+2?"), (A, "4"))), "duplicate_content"),
    (b"[1, 2]", "bad_type"),
    (line(conv(("system", "Be kind."), (U, "Hi"), (A, "Hello!"))), None),
]


def write_broken(path):
    data = b"\n".join(raw for raw, _ in BROKEN) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["broken.jsonl", "broken.jsonl.gz"])
def test_broken_corpus_rejects_every_bad_row_with_reason_and_line(tmp_path, name):
    path = write_broken(tmp_path / name)
    stats = ingest_source(SourceSpec(name="broken", path=str(path)), tmp_path / "out")
    store = MixStore(tmp_path / "out")

    expected_bad = [(i + 1, reason) for i, (raw, reason) in enumerate(BROKEN) if raw and reason]
    expected_good = [i + 1 for i, (raw, reason) in enumerate(BROKEN) if raw and not reason]
    assert stats["format"] == "openai" and stats["kind"] == "sft"
    assert stats["rows_in"] == len(expected_bad) + len(expected_good) == 11
    assert stats["rows_kept"] == 3
    assert stats["dropped"] == {"bad_type": 2, "duplicate_content": 1, "empty_turn": 1, "invalid_utf8": 1,
                                "malformed_json": 1, "missing_field": 1, "not_ending_with_assistant": 1}

    rejected = pl.read_parquet(store.rejected_path("ingest-broken")).sort("line")
    assert rejected.select("line", "drop_reason").rows() == expected_bad
    assert set(rejected["file"]) == {name} and set(rejected["drop_stage"]) == {"ingest"}
    details = dict(zip(rejected["line"], rejected["drop_detail"]))
    assert details[3] == "messages: is missing"
    assert details[5] == "messages[1].content: the assistant turn is empty"
    assert details[6] == "messages: the last turn is 'user', not 'assistant'"
    bad_byte = BROKEN[6][0].index(b"\xe9")  # the latin-1 é
    assert details[7] == f"invalid UTF-8 at byte {bad_byte} of the line"
    assert details[10] == "0"  # the duplicate names the first row's source_id
    assert rejected.filter(pl.col("line") == 2)["raw"][0] == BROKEN[1][0].decode()

    kept = store.read()
    assert kept.height == 3
    # source_id is the record's position: blank lines are not records, so line 9 is record 8 (source_id 7)
    assert kept["source_id"].to_list() == ["0", "7", "10"]
    assert kept["messages"][1][0]["content"] == "Line\u2028separator inside"
    assert len(set(kept["id"]) | set(rejected["id"].drop_nulls())) == 3  # the duplicate's id is the kept row's
    assert stats["distributions"]["turns"]["n"] == 3


def test_ingesting_twice_gives_byte_identical_shards(shared_data, tmp_path):
    spec = SourceSpec(name="uf", path=str(shared_data / "ultrafeedback/eval_clean.jsonl"))
    a = ingest_source(spec, tmp_path / "a", rows_per_shard=64)
    b = ingest_source(spec, tmp_path / "b", rows_per_shard=64)
    assert [s["file"] for s in a["shards"]] == [f"data/train-0000{i}-of-00004.parquet" for i in range(4)]
    assert [s["rows"] for s in a["shards"]] == [64, 64, 64, 8]
    digests = [sha256_file(tmp_path / "a" / s["file"]) for s in a["shards"]]
    assert digests == [sha256_file(tmp_path / "b" / s["file"]) for s in b["shards"]]
    assert digests == [s["sha256"] for s in a["shards"]]
    assert sha256_file(tmp_path / "a/rejected/ingest-uf.parquet") == sha256_file(tmp_path / "b/rejected/ingest-uf.parquet")
    # the shards load with datasets as DESIGN.md promises
    ds = datasets.load_dataset("parquet", data_dir=str(tmp_path / "a" / "data"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 200 and ds[0]["chosen"][0]["role"] == "user"


def test_rerun_resumes_and_redoes_when_inputs_or_outputs_change(tmp_path):
    path = write_broken(tmp_path / "broken.jsonl")
    spec = SourceSpec(name="b", path=str(path))
    first = ingest_source(spec, tmp_path / "out")
    assert first["resumed"] is False
    again = ingest_source(spec, tmp_path / "out")
    assert again["resumed"] is True and again["rows_kept"] == first["rows_kept"]
    assert ingest_source(spec, tmp_path / "out", rows_per_shard=2)["resumed"] is False  # config changed
    (tmp_path / "out/data/train-00000-of-00002.parquet").write_bytes(b"damaged")
    redone = ingest_source(spec, tmp_path / "out", rows_per_shard=2)
    assert redone["resumed"] is False and [s["rows"] for s in redone["shards"]] == [2, 1]
    with path.open("ab") as f:
        f.write(line(conv((U, "one more"), (A, "row"))) + b"\n")
    grown = ingest_source(spec, tmp_path / "out", rows_per_shard=2)
    assert grown["resumed"] is False and grown["rows_kept"] == 4
    assert sorted(p.name for p in (tmp_path / "out/data").iterdir()) == [
        "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"]


def test_several_sources_and_the_summary(shared_data, tmp_path):
    summary = ingest_sources([str(shared_data / "llama_factory/dpo_en_demo.json"),
                              str(shared_data / "self_instruct/seed_tasks.jsonl")], tmp_path / "out")
    assert [f.name for f in summary.folders] == ["dpo_en_demo", "seed_tasks"]
    assert (summary.rows_in, summary.rows_kept) == (475, 470)
    manifest = orjson.loads((tmp_path / "out/seed_tasks/manifest.json").read_bytes())
    assert manifest["format"] == "self_instruct" and manifest["rows"] == 175
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(summary.render())
    text = console.export_text()
    assert "dpo_en_demo" in text and "duplicate_content 5" in text


def test_whole_source_errors_name_the_file_and_the_formats(shared_data, tmp_path):
    gsm8k = shared_data / "evals/gsm8k_test.jsonl"
    with pytest.raises(IngestError, match=r"gsm8k_test.jsonl: the records \(fields \['answer', 'question'\]\) match no format") as err:
        ingest_sources([str(gsm8k)], tmp_path / "out")
    assert "alpaca" in str(err.value) and "ultrafeedback" in str(err.value)
    assert not list((tmp_path / "out").rglob("*.parquet"))  # nothing half-written
    with pytest.raises(IngestError, match="nope.jsonl: no such file or folder"):
        ingest_sources([str(tmp_path / "nope.jsonl")], tmp_path / "out")
    with pytest.raises(IngestError, match="unknown format 'csv'"):
        ingest_sources([str(gsm8k)], tmp_path / "out", format="csv")
    (tmp_path / "bad.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": ')
    with pytest.raises(IngestError, match=r"bad.json: not valid JSON after record 1"):
        ingest_sources([str(tmp_path / "bad.json")], tmp_path / "out2")
    assert not [p for p in (tmp_path / "out2").rglob("*") if p.is_file()]
    with pytest.raises(IngestError, match="--name names a single source"):
        ingest_sources([str(gsm8k), str(gsm8k)], tmp_path / "out", name="x")


def test_forced_format_and_limit(shared_data, tmp_path):
    spec = SourceSpec(name="hh", path=str(shared_data / "hh_rlhf/test_prefs.jsonl"), format="pairs", limit=10)
    stats = ingest_source(spec, tmp_path / "out")
    assert (stats["format"], stats["rows_in"], stats["rows_kept"]) == ("pairs", 10, 10)
    row = MixStore(tmp_path / "out").read().row(0, named=True)
    assert row["prompt"].startswith("Human: Can you give me facts about jumping spiders?")  # taken as-is


def test_source_names():
    assert source_name("x/ultrafeedback/eval_clean.jsonl.gz") == "eval_clean"
    assert source_name("hf:HuggingFaceH4/ultrafeedback_binarized:test_prefs") == "ultrafeedback_binarized"
    assert source_name("data/my shards/") == "my_shards"


def test_seen_ids_across_merges():
    seen = SeenIds()
    seen.MERGE_EVERY = 3
    ids = [f"{i:016x}" + "0" * 16 for i in range(10)]
    assert seen.first_seen(ids[:5], [str(i) for i in range(5)]) == [None] * 5  # merged into the sorted arrays
    assert seen.first_seen([ids[2], ids[7], ids[7]], ["x", "seed_7", "y"]) == ["2", None, "seed_7"]
    assert seen.first_seen(ids[5:8], ["5", "6", "z"]) == [None, None, "seed_7"]


def test_read_source_for_a_mix_writes_rejected_and_stats_but_no_shards(tmp_path):
    from alignmix.pipeline.ingest import read_source

    store = MixStore(tmp_path / "mix")
    frame = read_source(SourceSpec(name="b", path=str(write_broken(tmp_path / "broken.jsonl"))), store)
    assert frame.height == 3 and frame["source"].unique().to_list() == ["b"]
    assert pl.read_parquet(store.rejected_path("ingest-b")).height == 8
    stats = store.read_stats("ingest-b")
    assert (stats["rows_in"], stats["rows_kept"], stats["shards"]) == (11, 3, [])
    assert not store.data_dir.exists()


def test_hf_dataset_source_ingests_and_resumes(shared_data, tmp_path, monkeypatch):
    """A Hub-layout dataset repository by id (a local path here: tests have no network), split named."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "alpaca_repo"
    (repo / "data").mkdir(parents=True)
    records = json.loads((shared_data / "llama_factory/alpaca_en_demo.json").read_text("utf-8"))
    pq.write_table(pa.Table.from_pylist(records[:300]), repo / "data" / "train-00000-of-00001.parquet")
    summary = ingest_sources([f"hf:{repo}:train"], tmp_path / "out")
    stats = summary.sources[0]
    assert (stats["source"], stats["format"], stats["rows_in"], stats["rows_kept"]) == ("alpaca_repo", "alpaca", 300, 299)
    rejected = pl.read_parquet(tmp_path / "out/rejected/ingest-alpaca_repo.parquet")
    # records 275 and 117 are the first exact repeat in alpaca_en_demo.json (found with plain json)
    assert rejected.select("record", "source_id", "drop_reason", "drop_detail").rows() == [
        (276, "275", "duplicate_content", "117")]
    assert rejected["file"][0] == f"hf:{repo}:train"
    again = ingest_sources([f"hf:{repo}:train"], tmp_path / "out")
    assert again.sources[0]["resumed"] is True


def test_worker_processes_give_the_same_bytes(tmp_path):
    """Parsing and converting in worker processes changes nothing in the output, only where it runs."""
    path = tmp_path / "broken.jsonl"
    good = b"".join(line(conv((U, f"question {i}"), (A, f"answer {i}"))) + b"\n" for i in range(30))
    path.write_bytes(good + b"\n".join(raw for raw, _ in BROKEN) + b"\n" + good[: len(good) // 2])
    spec = SourceSpec(name="b", path=str(path))
    one = ingest_source(spec, tmp_path / "one", rows_per_shard=16)
    two = ingest_source(spec, tmp_path / "two", rows_per_shard=16, workers=2, batch_size=7)  # 11 batches
    assert (two["rows_in"], two["rows_kept"], two["dropped"]) == (one["rows_in"], one["rows_kept"], one["dropped"])
    assert one["dropped"]["duplicate_content"] == 1 + 15  # the repeated BROKEN row, and the repeated half
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in one["shards"]]
    assert sha256_file(tmp_path / "one/rejected/ingest-b.parquet") == sha256_file(tmp_path / "two/rejected/ingest-b.parquet")


def test_empty_source_needs_a_format_and_then_gives_one_empty_shard(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(IngestError, match="empty.jsonl: holds no records; give --format"):
        ingest_source(SourceSpec(name="e", path=str(empty)), tmp_path / "a")
    stats = ingest_source(SourceSpec(name="e", path=str(empty), format="alpaca"), tmp_path / "b")
    assert (stats["rows_in"], [s["rows"] for s in stats["shards"]]) == (0, [0])
    assert MixStore(tmp_path / "b").read().columns == ["messages", "id", "source", "source_id", "meta"]
