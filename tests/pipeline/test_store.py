"""The shard store: HF shard names, byte-identical output, atomic writes, resume."""

from __future__ import annotations

import polars as pl
import pytest

from alignmix.pipeline.schema import sft_row, to_frame
from alignmix.pipeline.store import MixStore, ShardWriter, atomic_path, fingerprint, sha256_file, write_shards


def frame(n: int) -> pl.DataFrame:
    rows = [sft_row([{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}],
                    source="toy", source_id=str(i)) for i in range(n)]
    return to_frame(rows, "sft")


def test_shards_are_named_counted_and_byte_identical(tmp_path):
    a = write_shards(frame(25), tmp_path / "a", rows_per_shard=10)
    b = write_shards(frame(25), tmp_path / "b", rows_per_shard=10)
    assert [(s["file"], s["rows"]) for s in a] == [
        ("data/train-00000-of-00003.parquet", 10), ("data/train-00001-of-00003.parquet", 10),
        ("data/train-00002-of-00003.parquet", 5)]
    assert [s["sha256"] for s in a] == [s["sha256"] for s in b]
    assert pl.read_parquet(tmp_path / "a").equals(frame(25))


def test_writing_in_pieces_gives_the_same_bytes_and_removes_stale_shards(tmp_path):
    whole = write_shards(frame(25), tmp_path / "d", rows_per_shard=10)
    writer = ShardWriter(tmp_path / "p", "train", "sft", rows_per_shard=10)
    for start in (0, 7, 19):
        writer.write(frame(25).slice(start, {0: 7, 7: 12, 19: 6}[start]))
    assert [s["sha256"] for s in writer.close()] == [s["sha256"] for s in whole]
    fewer = write_shards(frame(5), tmp_path / "d", rows_per_shard=10)  # a rerun with fewer shards
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["train-00000-of-00001.parquet"]
    assert fewer[0]["rows"] == 5


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_resume_needs_the_same_fingerprint_and_intact_outputs(tmp_path):
    store = MixStore(tmp_path)
    out = store.rejected_path("toy")
    store.write_rejected("toy", frame(3))
    fp = fingerprint({"threshold": 0.5}, "v1")
    assert not store.is_done("toy", fp)
    store.mark_done("toy", fp, {"rows_in": 3}, [out])
    assert store.is_done("toy", fp)
    assert not store.is_done("toy", fingerprint({"threshold": 0.6}, "v1"))
    assert store.read_stats("toy")["outputs"] == {"rejected/toy.parquet": sha256_file(out)}
    out.write_bytes(b"damaged")
    assert not store.is_done("toy", fp)
    out.unlink()
    assert not store.is_done("toy", fp)
