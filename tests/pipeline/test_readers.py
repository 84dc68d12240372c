"""Readers: every file kind, batches, bad lines as records with file and line, whole-file errors."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from alignmix.pipeline.readers import Progress, ReadError, locate, parse_source_string, read_batches


def _records(loc, **kw):
    return [r for batch in read_batches(loc, **kw) for r in batch]


LINES = [
    b'\xef\xbb\xbf{"a": 1}\r',  # a byte-order mark and a Windows line end
    b"",  # a blank line is not a record
    b'{"a": 2, "s": "x\xe2\x80\xa8y"}',  # U+2028 inside a string must not split the line
    b'{"a": ',
    b'{"a": "caf\xe9"}',  # latin-1, not UTF-8
    b'{"a": 3}',
]


def test_json_lines_plain_and_gzip_give_the_same_records(tmp_path):
    plain = tmp_path / "x.jsonl"
    plain.write_bytes(b"\n".join(LINES) + b"\n")
    packed = tmp_path / "x.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    for path in (plain, packed):
        recs = _records(locate(str(path)))
        assert [r.line for r in recs] == [1, 3, 4, 5, 6]
        assert [r.record for r in recs] == [1, 2, 3, 4, 5]
        assert [r.error.reason if r.error else None for r in recs] == [
            None, None, "malformed_json", "invalid_utf8", None]
        assert recs[1].value == {"a": 2, "s": "x\u2028y"}
        assert recs[3].error.message == "invalid UTF-8 at byte 10 of the line"
        assert recs[2].raw_text() == '{"a": '
        assert {r.file for r in recs} == {path.name}


def test_batches_and_limit(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(25)))
    progress = Progress()
    batches = list(read_batches(locate(str(path)), batch_size=10, progress=progress))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert progress.done == progress.total == path.stat().st_size
    limited = _records(locate(str(path)), batch_size=10, limit=13)
    assert [r.value["i"] for r in limited] == list(range(13))


def test_json_array_is_streamed_and_json_lines_under_a_json_name_work(tmp_path):
    arr = tmp_path / "arr.json"
    arr.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"i": i, "f": i / 2} for i in range(5)], indent=2).encode())
    recs = _records(locate(str(arr)), batch_size=2)
    assert [r.value for r in recs][:2] == [{"i": 0, "f": 0.0}, {"i": 1, "f": 0.5}]
    assert isinstance(recs[1].value["f"], float)  # not Decimal
    assert [r.record for r in recs] == [1, 2, 3, 4, 5] and recs[0].line is None
    lines = tmp_path / "lines.json"
    lines.write_text('{"i": 0}\n{"i": 1}\n')
    assert [r.value["i"] for r in _records(locate(str(lines)))] == [0, 1]


def test_broken_json_array_stops_with_the_file_and_record(tmp_path):
    arr = tmp_path / "broken.json"
    arr.write_text('[{"i": 0}, {"i": 1}, {"i": ]')
    with pytest.raises(ReadError, match=r"broken.json: not valid JSON after record 2"):
        _records(locate(str(arr)))


def test_parquet_folder_and_save_to_disk(tmp_path):
    import datasets

    folder = tmp_path / "shards"
    folder.mkdir()
    for k in range(2):
        pq.write_table(pa.table({"i": [k * 10 + j for j in range(3)]}), folder / f"part-{k}.parquet")
    (folder / ".hidden.parquet").write_bytes(b"not parquet")
    loc = locate(str(folder))
    assert loc.kind == "files" and [p.name for p in loc.files] == ["part-0.parquet", "part-1.parquet"]
    recs = _records(loc)
    assert [r.value["i"] for r in recs] == [0, 1, 2, 10, 11, 12]
    assert [r.file for r in recs][2:4] == ["part-0.parquet", "part-1.parquet"]

    disk = tmp_path / "disk"
    datasets.Dataset.from_list([{"i": 7}, {"i": 8}]).save_to_disk(str(disk))
    assert locate(str(disk)).kind == "disk"
    assert [r.value for r in _records(locate(str(disk)))] == [{"i": 7}, {"i": 8}]
    dd = tmp_path / "dd"
    datasets.DatasetDict({"a": datasets.Dataset.from_list([{"i": 1}]),
                          "b": datasets.Dataset.from_list([{"i": 2}])}).save_to_disk(str(dd))
    assert [r.value for r in _records(locate(str(dd), split="b"))] == [{"i": 2}]
    with pytest.raises(ReadError, match=r"has splits \['a', 'b'\]; name one"):
        _records(locate(str(dd)))


def test_hf_dataset_by_id_through_datasets(tmp_path, monkeypatch):
    """A dataset repository in the Hub layout, loaded by its id (a local path: no network in tests)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    repo = tmp_path / "org_dataset"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"i": [1, 2, 3]}), repo / "data" / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"i": [9]}), repo / "data" / "test-00000-of-00001.parquet")
    path, hf, split = parse_source_string(f"hf:{repo}:test")
    assert (path, hf, split) == (None, str(repo), "test")
    assert [r.value for r in _records(locate(hf=hf, split=split))] == [{"i": 9}]
    with pytest.raises(ReadError, match="has splits"):
        _records(locate(hf=str(repo)))
    with pytest.raises(ReadError, match="cannot be loaded with datasets"):
        _records(locate(hf=str(tmp_path / "nope"), split="train"))


def test_unreadable_inputs_name_the_file_and_what_is_accepted(tmp_path):
    with pytest.raises(ReadError, match=r"missing.jsonl: no such file or folder \(accepted: local .parquet"):
        locate(str(tmp_path / "missing.jsonl"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ReadError, match=r"notes.txt: unsupported file type .txt"):
        locate(str(tmp_path / "notes.txt"))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"definitely not parquet")
    with pytest.raises(ReadError, match="bad.parquet: not a readable parquet file"):
        _records(locate(str(bad)))
    weird = tmp_path / "weird.json"
    weird.write_text('"just a string"')
    with pytest.raises(ReadError, match="must hold an array of records or one JSON object per line"):
        _records(locate(str(weird)))
