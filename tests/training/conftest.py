"""Small mix directories built from real data in ../shared/data: Alpaca SFT rows, UltraFeedback pairs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from alignmix.pipeline.adapters import get_adapter
from alignmix.pipeline.schema import to_frame
from alignmix.pipeline.store import MixStore, write_json, write_shards

UF = "ultrafeedback/eval_clean.jsonl"
ALPACA = "llama_factory/alpaca_en_demo.json"


def uf_pairs(shared_data: Path, n: int, max_prompt_chars: int = 200) -> list[dict]:
    """The first `n` UltraFeedback pairs whose prompt is short (CPU tests use short sequences: the prompt must
    leave room for the responses, which are truncated) and whose scores differ (a tie says nothing)."""
    out = []
    for line in (shared_data / UF).read_bytes().split(b"\n"):
        if not line.strip():
            continue
        rec = orjson.loads(line)
        meta = rec.get("metadata") or {}
        if meta.get("score_chosen") == meta.get("score_rejected") or len(rec["prompt"]) > max_prompt_chars:
            continue
        out.append(rec)
        if len(out) == n:
            break
    return out


def alpaca_records(shared_data: Path, n: int, max_chars: int = 600) -> list[dict]:
    recs = orjson.loads((shared_data / ALPACA).read_bytes())
    return [r for r in recs if len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= max_chars][:n]


def build_mix(shared_data: Path, root: Path, kind: str, n_train: int, n_test: int) -> Path:
    """A mix directory (data/train-*, data/test-*, manifest, README) from real rows, converted by the
    pipeline's own format adapters: Alpaca for SFT, UltraFeedback prompt/chosen/rejected pairs for preference."""
    if kind == "sft":
        adapter, recs = get_adapter("alpaca"), alpaca_records(shared_data, n_train + n_test)
    else:
        adapter, recs = get_adapter("pairs"), uf_pairs(shared_data, n_train + n_test)
    assert len(recs) == n_train + n_test
    rows = [row for i, rec in enumerate(recs) for row in adapter.convert(rec, source="test", source_id=str(i))]
    store = MixStore(root)
    frame = to_frame(rows, adapter.kind)
    write_shards(frame.head(n_train), store.data_dir, "train")
    write_shards(frame.tail(n_test), store.data_dir, "test")
    write_json(store.manifest_path, {"recipe": {"name": f"test-{kind}"}, "recipe_hash": "0" * 64})
    (root / "README.md").write_text(f"# test-{kind} data card\n")
    return root


@pytest.fixture(scope="session")
def sft_mix(shared_data: Path, tmp_path_factory) -> Path:
    return build_mix(shared_data, tmp_path_factory.mktemp("sft-mix"), "sft", n_train=8, n_test=4)


@pytest.fixture(scope="session")
def pref_mix(shared_data: Path, tmp_path_factory) -> Path:
    return build_mix(shared_data, tmp_path_factory.mktemp("pref-mix"), "preference", n_train=8, n_test=6)
