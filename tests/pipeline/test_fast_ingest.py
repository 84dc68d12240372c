"""The fast (batch-at-once) ingest path against the per-row path: same shards to the byte, same rejected rows.

Every format is ingested twice, `fast=True` and `fast=False`, from real records (../shared/data) reshaped into
the format where the data has none of its own, with small batches so that clean batches (fast path) and
batches holding a bad record (per-row path) alternate in one source.
"""

from __future__ import annotations

import json

import orjson
import polars as pl
import pytest

from alignmix.pipeline.convert import SourceRun, convert_batches
from alignmix.pipeline.fast_convert import convert_fast
from alignmix.pipeline.ingest import ingest_source
from alignmix.pipeline.readers import RawRecord, locate, read_batches
from alignmix.pipeline.recipe import SourceSpec
from alignmix.pipeline.schema import content_id
from alignmix.pipeline.store import MixStore, sha256_file

U, A, S = "user", "assistant", "system"


def _jsonl(path, records):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records))
    return path


def _pairs(shared_data, n=60):
    lines = (shared_data / "ultrafeedback/eval_clean.jsonl").read_bytes().splitlines()
    return [orjson.loads(x) for x in lines[:n]]


def _both(tmp_path, path, batch_size=7, **spec):
    """Ingest `path` by both paths; assert identical outputs; return the fast run's stats and store."""
    spec = SourceSpec(name="s", path=str(path), **spec)
    fast = ingest_source(spec, tmp_path / "fast", rows_per_shard=23, batch_size=batch_size)
    slow = ingest_source(spec, tmp_path / "slow", rows_per_shard=23, batch_size=batch_size, fast=False)
    assert [s["sha256"] for s in fast["shards"]] == [s["sha256"] for s in slow["shards"]]
    assert [s["rows"] for s in fast["shards"]] == [s["rows"] for s in slow["shards"]]
    for key in ("format", "kind", "rows_in", "rows_kept", "dropped", "distributions"):
        assert fast[key] == slow[key], key
    rejected = [pl.read_parquet(tmp_path / run / "rejected/ingest-s.parquet") for run in ("fast", "slow")]
    assert rejected[0].equals(rejected[1])
    assert sha256_file(tmp_path / "fast/rejected/ingest-s.parquet") == sha256_file(tmp_path / "slow/rejected/ingest-s.parquet")
    return fast, MixStore(tmp_path / "fast")


def _fast_batches(path, batch_size=7, **spec):
    """How many of the source's batches the fast path takes, of how many."""
    spec = SourceSpec(name="s", path=str(path), **spec)
    run = SourceRun("s")
    list(convert_batches(spec, run, batch_size=batch_size, fast=False))  # detects format and kind
    batches = list(read_batches(locate(str(path)), batch_size=batch_size))
    done = [convert_fast(run.adapter.name, run.kind, "s", b, 0) for b in batches]
    return sum(d is not None for d in done), len(batches)


# --- every format, clean and with broken records ------------------------------------------------------------


def test_pairs_clean_and_broken(shared_data, tmp_path):
    records = _pairs(shared_data)
    assert _fast_batches(_jsonl(tmp_path / "clean.jsonl", records)) == (9, 9)
    broken = list(records)
    broken[3] = {**broken[3], "chosen": 7}                                  # bad_type
    broken[10] = {k: v for k, v in broken[10].items() if k != "rejected"}    # missing_field
    broken[17] = {**broken[17], "metadata": {"score_chosen": "high"}}        # bad_type score
    broken[24] = {**broken[24], "prompt": "   "}                             # empty_turn
    broken[30] = records[2]                                                  # duplicate_content
    broken[40] = {**broken[40], "system": "Be brief.", "score_chosen": 3}    # a system turn, a top-level score
    path = _jsonl(tmp_path / "pairs.jsonl", broken + [b'{"prompt": "cut', b"[1]"])
    assert _fast_batches(path) == (4, 10)  # the "[1]" line (not an object) is a batch of its own
    stats, store = _both(tmp_path, path)
    assert (stats["format"], stats["rows_in"], stats["rows_kept"]) == ("pairs", 62, 55)
    assert stats["dropped"] == {"bad_type": 3, "duplicate_content": 1, "empty_turn": 1, "malformed_json": 1,
                                "missing_field": 1}
    row = store.read().filter(pl.col("source_id") == "40").row(0, named=True)
    assert row["chosen"][0] == {"role": S, "content": "Be brief.", "reasoning_content": None} and row["score_chosen"] == 3.0


def test_ultrafeedback_message_lists(shared_data, tmp_path):
    records = []
    for i, r in enumerate(_pairs(shared_data)):
        head = [{"role": U, "content": r["prompt"]}]
        rec = {"prompt": r["prompt"], "chosen": head + [{"role": A, "content": r["chosen"]}],
               "rejected": head + [{"role": A, "content": r["rejected"]}],
               "score_chosen": r["metadata"]["score_chosen"], "score_rejected": r["metadata"]["score_rejected"],
               "prompt_id": f"p{i}"}
        if i % 5 == 1:
            del rec["prompt"]  # taken from the last user turn
        records.append(rec)
    assert _fast_batches(_jsonl(tmp_path / "clean.jsonl", records)) == (9, 9)
    records[4] = {**records[4], "rejected": [{"role": U, "content": "another question"}, records[4]["rejected"][1]]}
    records[12] = {**records[12], "chosen": records[12]["chosen"][:1]}       # ends with the user
    records[20] = {**records[20], "score_rejected": True}                    # a bool is not a score
    records[33] = {**records[33], "prompt": [{"role": U, "content": "TRL's form"}],
                   "chosen": records[33]["chosen"][1:], "rejected": records[33]["rejected"][1:]}
    stats, _ = _both(tmp_path, _jsonl(tmp_path / "uf.jsonl", records))
    assert (stats["format"], stats["rows_kept"]) == ("ultrafeedback", 57)
    assert stats["dropped"] == {"bad_type": 1, "not_ending_with_assistant": 1, "prompt_mismatch": 1}


def test_openai_sft_and_prompts(shared_data, tmp_path):
    records = [{"messages": ([{"role": "developer", "content": "Be kind."}] if i % 3 == 0 else [])
                + [{"role": U, "content": r["prompt"]}, {"role": A, "content": r["chosen"]}], "tag": i}
               for i, r in enumerate(_pairs(shared_data))]
    assert _fast_batches(_jsonl(tmp_path / "clean.jsonl", records)) == (9, 9)
    records[5] = {"messages": [{"role": U, "content": [{"type": "text", "text": "parts"}]}, {"role": A, "content": "ok"}]}
    records[9] = {"messages": [{"role": "tool", "content": "x"}, {"role": A, "content": "y"}]}
    records[15] = records[0]
    stats, _ = _both(tmp_path, _jsonl(tmp_path / "openai.jsonl", records))
    assert (stats["format"], stats["kind"], stats["rows_kept"]) == ("openai", "sft", 58)
    assert stats["dropped"] == {"bad_role": 1, "duplicate_content": 1}

    prompts = [{"messages": [{"role": U, "content": r["prompt"]}]} for r in _pairs(shared_data)]
    prompts[8] = {"messages": [{"role": U, "content": "a"}, {"role": A, "content": "answered"}]}
    stats, _ = _both(tmp_path / "p", _jsonl(tmp_path / "prompts.jsonl", prompts))
    assert (stats["kind"], stats["rows_kept"], stats["dropped"]) == ("prompt", 59, {"not_ending_with_user": 1})


def test_sharegpt_prompts_and_sft(shared_data, tmp_path):
    path = shared_data / "prompts/sharegpt_first_turns_2978.json"  # a JSON array: ijson, not JSON Lines
    fast, total = _fast_batches(path, batch_size=200)
    assert total == 15 and fast >= 10  # a few batches hold an empty or answered record
    stats, _ = _both(tmp_path, path, batch_size=200)
    assert (stats["format"], stats["kind"], stats["rows_in"], stats["rows_kept"]) == ("sharegpt", "prompt", 2978, 2861)

    convs = [{"conversations": [{"from": "human", "value": r["prompt"]}, {"from": "gpt", "value": r["chosen"]}],
              **({"system": "Answer well."} if i % 4 == 0 else {})} for i, r in enumerate(_pairs(shared_data))]
    convs[6] = {"conversations": [{"from": "function_call", "value": "f()"}, {"from": "gpt", "value": "x"}]}
    convs[7] = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": None}]}
    stats, _ = _both(tmp_path / "sft", _jsonl(tmp_path / "sharegpt.jsonl", convs))
    assert (stats["kind"], stats["rows_kept"], stats["dropped"]) == ("sft", 58, {"bad_role": 1, "bad_type": 1})


def test_alpaca_json_array(shared_data, tmp_path):
    path = shared_data / "llama_factory/alpaca_en_demo.json"
    assert _fast_batches(path, batch_size=100) == (10, 10)
    stats, _ = _both(tmp_path, path, batch_size=100)
    assert (stats["format"], stats["rows_in"], stats["rows_kept"]) == ("alpaca", 999, 985)
    records = json.loads(path.read_text("utf-8"))[:50]
    records[3] = {**records[3], "history": [["hi", "hello"]]}                # LLaMA-Factory history: per-row path
    records[7] = {**records[7], "output": ""}                                # empty answer
    records[11] = {**records[11], "input": 5}                                # bad_type
    records[19] = {**records[19], "system": "You are terse."}
    broken = tmp_path / "alpaca.json"
    broken.write_text(json.dumps(records))
    stats, _ = _both(tmp_path / "b", broken)
    assert (stats["rows_kept"], stats["dropped"]) == (48, {"bad_type": 1, "empty_turn": 1})


def test_prompt_lists(shared_data, tmp_path):
    for name, kept in [("evals/mt_bench_question.jsonl", 80), ("evals/alpaca_eval_text_davinci_003_outputs.json", 805),
                       ("evals/arena_hard_v0.1_question.jsonl", 500), ("multilingual/ja_input_data.jsonl", 172)]:
        fast, total = _fast_batches(shared_data / name, batch_size=50)
        # MT-Bench's second batch holds `"category": "reasoning"`: the bytes hold a REASONING_MARKERS entry
        assert fast == total - (name == "evals/mt_bench_question.jsonl"), name
        stats, _ = _both(tmp_path / name.replace("/", "_"), shared_data / name, batch_size=50)
        assert (stats["format"], stats["rows_kept"]) == ("prompts", kept), name
    mixed = [{"turns": ["first", "follow-up"]}, {"question": "q?", "id": 1}, {"prompt": "p", "system": "s"},
             {"instruction": "do", "input": "this"}, {"turns": []}, {"prompt": ["not", "messages"]}, {"question": None}]
    stats, _ = _both(tmp_path / "mixed", _jsonl(tmp_path / "mixed.jsonl", mixed), batch_size=2, format="prompts")
    assert (stats["rows_kept"], stats["dropped"]) == (4, {"bad_type": 1, "empty_turn": 1, "missing_field": 1})


@pytest.mark.parametrize("name", ["hh_rlhf/test_prefs.jsonl", "llama_factory/dpo_en_demo.json",
                                  "self_instruct/seed_tasks.jsonl"])
def test_formats_without_a_fast_path_are_unchanged(shared_data, tmp_path, name):
    assert _fast_batches(shared_data / name, batch_size=100)[0] == 0
    stats, _ = _both(tmp_path, shared_data / name, batch_size=100)
    assert stats["rows_kept"] == {"hh_rlhf/test_prefs.jsonl": 996, "llama_factory/dpo_en_demo.json": 295,
                                  "self_instruct/seed_tasks.jsonl": 175}[name]


# --- ids --------------------------------------------------------------------------------------------------------

TRICKY = ["  padded\t\n", "quote \" backslash \\ slash /", "ctrl \x01\x1f\x7f", "line\u2028para\u2029",
          "cafe\u0301 (NFD) and caf\u00e9", "\u3000ideographic space\u3000", "\x1cfile separator\x1d", "emoji \U0001f600",
          "\ufeffbom", "tab\tinside", "日本語のテキスト"]


@pytest.mark.parametrize("kind", ["sft", "prompt", "preference"])
def test_fast_ids_equal_content_id_on_tricky_text(kind):
    """The ids are assembled from each text's JSON; they equal schema.content_id for every text."""
    batch = []
    for i, a in enumerate(TRICKY):
        b = TRICKY[(i + 3) % len(TRICKY)]
        if kind == "preference":
            value = {"prompt": a, "chosen": b, "rejected": a + b, "system": TRICKY[(i + 5) % len(TRICKY)]}
        elif kind == "prompt":
            value = {"messages": [{"role": "system", "content": b}, {"role": "user", "content": a}]}
        else:
            value = {"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}]}
        batch.append(RawRecord(value, "t.jsonl", i + 1, i + 1))
    fast = convert_fast("pairs" if kind == "preference" else "openai", kind, "t", batch, 0)
    assert fast is not None
    rows = fast.table.to_pylist()
    assert fast.ids == [r["id"] for r in rows] == [content_id(r, kind) for r in rows]
    assert len(set(fast.ids)) == len(TRICKY)


def test_a_batch_with_one_bad_record_takes_the_per_row_path():
    good = RawRecord({"messages": [{"role": U, "content": "q"}, {"role": A, "content": "a"}]}, "t.jsonl", 1, 1)
    for bad in [{"messages": [{"role": U, "content": "q"}, {"role": A, "content": " "}]},
                {"messages": [{"role": U, "content": "q"}, {"role": A, "content": 3}]},
                {"messages": [{"role": A, "content": "a"}]}, {"messages": "text"}, ["a", "list"]]:
        assert convert_fast("openai", "sft", "t", [good, RawRecord(bad, "t.jsonl", 2, 2)], 0) is None
    assert convert_fast("openai", "sft", "t", [good], 0) is not None


def test_worker_processes_and_fast_path_give_the_per_row_bytes(shared_data, tmp_path):
    records = _pairs(shared_data, 40)
    records[13] = {**records[13], "rejected": None}
    path = _jsonl(tmp_path / "pairs.jsonl", records + records[:5])
    spec = SourceSpec(name="s", path=str(path))
    slow = ingest_source(spec, tmp_path / "slow", rows_per_shard=16, batch_size=6, fast=False)
    two = ingest_source(spec, tmp_path / "two", rows_per_shard=16, batch_size=6, workers=2)
    assert [s["sha256"] for s in two["shards"]] == [s["sha256"] for s in slow["shards"]]
    assert two["dropped"] == slow["dropped"] == {"duplicate_content": 5, "missing_field": 1}
    assert sha256_file(tmp_path / "two/rejected/ingest-s.parquet") == sha256_file(tmp_path / "slow/rejected/ingest-s.parquet")


def test_default_workers_follow_the_cpu_count_for_large_files(tmp_path, monkeypatch):
    from alignmix.pipeline import ingest

    path = _jsonl(tmp_path / "x.jsonl", [{"messages": [{"role": U, "content": "q"}, {"role": A, "content": "a"}]}])
    loc = locate(str(path))
    monkeypatch.setattr(ingest, "WORKERS_FROM_BYTES", path.stat().st_size)
    assert [ingest.default_workers(loc, cpus=c) for c in (1, 2, 3, 8, 64)] == [1, 1, 2, 4, 4]
    monkeypatch.setattr(ingest, "WORKERS_FROM_BYTES", path.stat().st_size + 1)
    assert ingest.default_workers(loc, cpus=8) == 1


def test_the_shard_thread_hands_its_error_to_the_caller(tmp_path):
    import pyarrow as pa

    from alignmix.pipeline.ingest import BackgroundShards
    from alignmix.pipeline.store import ShardWriter

    shards = BackgroundShards(ShardWriter(tmp_path / "data", "train", "sft", rows_per_shard=2))
    shards.write(pa.table({"text": ["a"]}))
    shards.write(pa.table({"other": [1]}))  # the shard is full: concatenating the two fails, in the thread
    with pytest.raises(pa.ArrowInvalid, match="[Ss]chema"):
        shards.close()


# --- JSON Lines blocks: parsed by Arrow, built column by column (block_convert) ---------------------------------


def _block_paths(path, batch_size=7, **spec):
    """For each batch of the source: 'block' (block_convert took it), 'records' (the record fast path) or None."""
    from alignmix.pipeline.block_convert import convert_block
    from alignmix.pipeline.readers import LineBlock

    spec = SourceSpec(name="s", path=str(path), **spec)
    run = SourceRun("s")
    list(convert_batches(spec, run, batch_size=batch_size, fast=False))
    out = []
    for b in read_batches(locate(str(path)), batch_size=batch_size):
        if convert_fast(run.adapter.name, run.kind, "s", b, 0) is None:
            out.append(None)
        else:
            block = isinstance(b, LineBlock) and convert_block(run.adapter.name, run.kind, "s", b, 0) is not None
            out.append("block" if block else "records")
    return out


def test_pairs_blocks_on_odd_but_valid_and_broken_lines(shared_data, tmp_path):
    records = _pairs(shared_data, 56)
    assert _block_paths(_jsonl(tmp_path / "clean.jsonl", records)) == ["block"] * 8
    lines = [orjson.dumps(r) for r in records]
    odd = {
        1: b'{"prompt": "a", "prompt": "b", "chosen": "c", "rejected": "d"}',      # a repeated key: orjson keeps the last
        8: b'{"prompt": "lone \\ud800", "chosen": "c", "rejected": "d"}',          # malformed_json for orjson
        15: b'{"prompt": "p", "chosen": "c", "rejected": "d", "score_chosen": NaN}',
        22: b'{"prompt": "p", "chosen": "c", "rejected": "d", "score_chosen": 123456789012345678901234}',
        29: b'{"prompt": "one", "chosen": "c", "rejected": "d"}{"prompt": "two", "chosen": "c", "rejected": "d"}',
        36: b'   {"prompt": "indented", "chosen": "c", "rejected": "d"}',
        43: b"",                                                                      # a blank line
        50: orjson.dumps({**records[50], "prompt": "\x1c edges \u2028", "chosen": "cafe\u0301", "rejected": " \u3000x"}),
    }
    for i, line in odd.items():
        lines[i] = line
    path = tmp_path / "odd.jsonl"
    path.write_bytes(codecs_bom() + b"\r\n".join(lines) + b"\r\n")
    # Arrow refuses the repeated key, the lone surrogate and NaN (the record path reads the first like orjson);
    # the huge integer is a float to Arrow and orjson alike, but the record path decides; the indented line is a
    # batch of its own, the blank line ends a block; the text edges (U+001C, NFD, U+3000) stay in a block
    paths = _block_paths(path)
    assert paths == ["records", None, None, "records", None, "block", "records", "block", "block", "block"]
    stats, store = _both(tmp_path, path)
    assert (stats["rows_in"], stats["rows_kept"], stats["dropped"]) == (55, 52, {"malformed_json": 3})
    kept = store.read()
    assert kept.filter(pl.col("prompt") == "b").height == 1
    assert kept.filter(pl.col("prompt") == "indented")["source_id"].to_list() == ["36"]


def codecs_bom():
    import codecs

    return codecs.BOM_UTF8


def test_pairs_blocks_scores_meta_and_text_edges(shared_data, tmp_path):
    base = _pairs(shared_data, 42)
    shapes = [
        lambda r, i: {**r, "score_chosen": i, "score_rejected": i / 2, "id": f"r{i}", "flag": i % 2 == 0},
        lambda r, i: {**r, "metadata": None, "note": None if i % 3 else "q\"uote\u2028"},
        lambda r, i: {**r, "metadata": {"score_chosen": 1}, "system": ""},
        lambda r, i: {**r, "prompt": f"  {r['prompt']}\u00a0", "chosen": "Cafe\u0301 \x1f", "rejected": "\U0001f600 x"},
        lambda r, i: {**r, "metadata": {**r["metadata"], "judge": "gpt"}},            # metadata extras: record path
        lambda r, i: {**r, "weight": 0.5},                                            # a float in meta: record path
    ]
    for k, shape in enumerate(shapes):
        records = [shape(r, i) for i, r in enumerate(base[k * 7:(k + 1) * 7])]
        path = _jsonl(tmp_path / f"shape{k}.jsonl", records)
        assert _block_paths(path) == ["block" if k < 4 else "records"], k
        stats, _ = _both(tmp_path / f"s{k}", path)
        assert stats["rows_kept"] == 7, k


def test_prompt_blocks(shared_data, tmp_path):
    prompts = [r["prompt"] for r in orjson.loads((shared_data / "evals/alpaca_eval_text_davinci_003_outputs.json")
                                                 .read_bytes()) for r in [{"prompt": r["instruction"]}]][:60]
    records = [{"prompt": p, "category": "x" if i % 4 else None, "n": i} for i, p in enumerate(prompts)]
    records += [{"prompt": prompts[0]}, {"prompt": "  "}]                         # duplicate_content, empty_turn
    path = _jsonl(tmp_path / "p.jsonl", records)
    assert _block_paths(path, batch_size=20) == ["block"] * 3 + [None]
    stats, _ = _both(tmp_path / "p", path, batch_size=20)
    assert (stats["kind"], stats["rows_kept"], stats["dropped"]) == ("prompt", 60, {"duplicate_content": 1,
                                                                                    "empty_turn": 1})
    mixed = _jsonl(tmp_path / "q.jsonl", [{"question": "q?"}, {"prompt": "p?"}, {"question": "r?", "system": "s"}])
    assert _block_paths(mixed, batch_size=2, format="prompts") == ["records", "records"]
    assert _both(tmp_path / "q", mixed, batch_size=2, format="prompts")[0]["rows_kept"] == 3


def test_reasoning_markup_sends_a_batch_to_the_per_row_path(shared_data, tmp_path):
    from alignmix.pipeline.fast_convert import REASONING_MARKERS

    records = _pairs(shared_data, 12)
    for marker in REASONING_MARKERS:
        text = marker.decode().strip('"')
        shaped = [records[0], {**records[1], "chosen": f"{text} 5"}] if marker.startswith(b"<") else \
            [records[0], {**records[1], text: "thought"}]
        path = _jsonl(tmp_path / "m.jsonl", shaped)
        assert _block_paths(path) == [None], marker
        assert convert_fast("pairs", "preference", "s", [RawRecord(r, "m", i + 1) for i, r in enumerate(shaped)], 0) \
            is None, marker
    assert _block_paths(_jsonl(tmp_path / "ok.jsonl", records[:2] + [{**records[2], "chosen": "a < b and c > d"}])) \
        == ["block"]
    # `<` escaped as \u003c (Go's encoding/json): the tags hide in the bytes, so the escape itself sends it on
    go = orjson.dumps({**records[3], "chosen": "<think>2 + 3</think> 5"}).replace(b"<", b"\\u003c")
    lines = [orjson.dumps(r) for r in records[:3]] + [go] + [orjson.dumps(r) for r in records[4:]]
    (tmp_path / "go.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert _block_paths(tmp_path / "go.jsonl") == [None, "block"]
    stats, store = _both(tmp_path / "go", tmp_path / "go.jsonl")
    split = store.read().filter(pl.col("source_id") == "3")["chosen"].to_list()[0][-1]
    assert (split["content"], split["reasoning_content"], stats["rows_kept"]) == ("5", "2 + 3", 12)
    assert convert_fast("openai", "sft", "s", [RawRecord({"messages": [{"role": U, "content": "q"},
                                                                       {"role": A, "content": "a"}]}, "m", 1)], 0,
                        columns={"prompt": "q"}) is None


def test_polars_json_text_is_orjsons_on_every_character():
    """The block path writes the id keys with polars' JSON encoder: it must escape exactly as orjson does."""
    import sys

    from alignmix.pipeline.block_convert import PY_WHITESPACE, _json

    chars = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    texts = ["".join(chars[i: i + 97]) for i in range(0, len(chars), 97)]  # every character, beside others
    encoded = pl.DataFrame({"t": texts}).select(_json("t")).to_series().to_list()
    assert [e.encode() for e in encoded] == [orjson.dumps(t) for t in texts]
    assert PY_WHITESPACE == "".join(c for c in chars if c.isspace())


def test_a_line_longer_than_the_arrow_block_and_a_limit(shared_data, tmp_path):
    records = _pairs(shared_data, 10)
    records[4] = {**records[4], "chosen": "long answer. " * 200_000}  # 2.6 MB on one line
    path = _jsonl(tmp_path / "long.jsonl", records)
    assert _block_paths(path, batch_size=100) == ["block"]
    stats, _ = _both(tmp_path / "l", path, batch_size=100)
    assert stats["rows_kept"] == 10
    limited = _both(tmp_path / "lim", path, batch_size=100, limit=6)[0]
    assert (limited["rows_in"], limited["rows_kept"]) == (6, 6)


def test_shard_bytes_do_not_depend_on_how_batches_are_cut(shared_data, tmp_path, monkeypatch):
    """JSON Lines blocks end at blank lines and after BLOCK_BYTES, JSON arrays come in BATCH_SIZE records: the
    shards are re-cut into BATCH_SIZE rows, so the same records give the same bytes either way (the blocks'
    ids hashed on two threads, the array's by the record path)."""
    from alignmix.pipeline import readers

    from alignmix.pipeline import block_convert

    monkeypatch.setattr(readers, "BLOCK_BYTES", 1 << 20)  # pieces of 1 MiB: blocks cut mid-batch
    monkeypatch.setattr(block_convert, "_THREADED_HASH_BYTES", 0)  # every block's ids hashed on two threads
    records = _pairs(shared_data, 200) * 11
    records = [{**r, "prompt": f"{r['prompt']} ({i})"} for i, r in enumerate(records)]
    lines = [orjson.dumps(r) for r in records]
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(lines[:1000]) + b"\n\n" + b"\n".join(lines[1000:]) + b"\n")
    (tmp_path / "a.json").write_bytes(orjson.dumps(records))
    shards = {}
    for name in ("a.jsonl", "a.json"):
        stats = ingest_source(SourceSpec(name="s", path=str(tmp_path / name)), tmp_path / name.replace(".", "_"),
                              rows_per_shard=1500)
        shards[name] = [s["sha256"] for s in stats["shards"]]
    assert shards["a.jsonl"] == shards["a.json"] and len(shards["a.json"]) == 2
