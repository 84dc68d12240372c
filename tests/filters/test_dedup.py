"""Exact and near-duplicate stages on designed rows, SFT fields, and the data-juicer demo duplicates."""

import numpy as np
import polars as pl
import pytest

from alignmix.filters.exact_dedup import ExactDedup
from alignmix.filters.minhash import shingles, sketch
from alignmix.filters.near_dedup import NearDedup, NearDedupConfig, near_duplicate_clusters
from alignmix.pipeline.schema import sft_row, to_frame
from tests.filters.rows import by_source_id, jsonl, pref, prefs, sft, sfts
from tests.stage_contract import assert_stage_contract

EXPECTED_EXACT = ["11"]  # a copy of row 6
EXPECTED_NEAR = ["10", "13", "8"]  # row 8 ~ 7, 10 ~ 9 (7 and 9 differ in their second half), 13 ~ 12

BASE = (
    "Write a short story about a lighthouse keeper who finds a message in a bottle that was sent "
    "from the future, and describe how the message changes the way she looks after the light every night"
)


def test_exact_dedup_drops_normalized_copies_with_the_kept_id():
    frame = prefs(
        pref(0, "a", "b", prompt="Hello  World"),
        pref(1, "c", "d", prompt="hello world"),
        pref(2, "e", "f", prompt="HELLO\u00a0WORLD\n"),
        pref(3, "g", "h", prompt="something else"),
    )
    kept, rejected, stats = assert_stage_contract(ExactDedup(), frame)
    first_id = frame["id"][0]
    assert by_source_id(rejected) == {"1": ("exact_duplicate", first_id), "2": ("exact_duplicate", first_id)}
    assert stats.dropped == {"exact_duplicate": 2}
    assert kept["exact_cluster"].to_list() == [0, None]
    assert kept["exact_cluster_size"].to_list() == [3, 1]


def test_exact_dedup_keeps_the_highest_score():
    frame = prefs(
        pref(0, "a", "b", prompt="same prompt", sc=5.0),
        pref(1, "c", "d", prompt="Same prompt", sc=9.0),
        pref(2, "e", "f", prompt="same  prompt", sc=None),
    )
    kept, rejected, _ = assert_stage_contract(ExactDedup({"keep": "highest_score"}), frame)
    assert kept["source_id"].to_list() == ["1"]
    assert by_source_id(rejected) == {"0": ("exact_duplicate", frame["id"][1]), "2": ("exact_duplicate", frame["id"][1])}


def test_exact_dedup_on_sft_fields():
    frame = sfts(
        sft(0, "What is 2+2?", "4"),
        sft(1, "what is 2+2?", "Four."),
        sft(2, "what is 2+2?", "Four.", system="Be brief."),
    )
    _, rejected, _ = assert_stage_contract(ExactDedup({"field": "first_user"}), frame)
    assert sorted(rejected["source_id"]) == ["1", "2"]
    _, rejected, _ = assert_stage_contract(ExactDedup({"field": "conversation"}), frame)
    assert rejected["source_id"].to_list() == []
    _, rejected, _ = assert_stage_contract(ExactDedup({"field": "response"}), frame)
    assert by_source_id(rejected) == {"2": ("exact_duplicate", frame["id"][1])}


def test_near_dedup_drops_a_close_copy_and_keeps_a_distant_one():
    near = BASE.replace("every night", "each night")  # one word changed near the end: Jaccard 0.88
    far = BASE.replace("lighthouse keeper", "baker").replace("bottle", "loaf").replace("future", "past")
    frame = prefs(pref(0, "x", "y", prompt=BASE), pref(1, "x", "y", prompt=near), pref(2, "x", "y", prompt=far),
                  pref(3, "x", "y", prompt="an unrelated prompt about tax law in nineteenth century France"))
    kept, rejected, stats = assert_stage_contract(NearDedup(), frame)
    assert by_source_id(rejected) == {"1": ("near_duplicate", frame["id"][0])}
    assert rejected["dup_cluster"].to_list() == [0]
    a, b = set(shingles(BASE, 5)), set(shingles(near, 5))
    assert rejected["dup_similarity"][0] == pytest.approx(len(a & b) / len(a | b))
    assert 0.8 < len(a & b) / len(a | b) < 0.9
    assert kept["dup_cluster"].to_list() == [0, None, None]
    assert stats.config["bands"] == 17 and stats.config["rows"] == 7
    assert stats.distributions["lsh"]["bands"] == 17


def test_near_dedup_keeps_the_highest_score_and_records_the_cluster():
    frame = prefs(
        pref(0, "x", "y", prompt=BASE, sc=3.0),
        pref(1, "x", "y", prompt=BASE + " please", sc=8.0),
        pref(2, "x", "y", prompt=BASE + " thanks", sc=8.0),
    )
    kept, rejected, _ = assert_stage_contract(NearDedup({"keep": "highest_score"}), frame)
    assert kept["source_id"].to_list() == ["1"]  # 8.0 twice: the first of the two
    assert by_source_id(rejected) == {"0": ("near_duplicate", frame["id"][1]), "2": ("near_duplicate", frame["id"][1])}
    assert rejected["dup_cluster"].to_list() == [0, 0]


def test_near_dedup_on_sft_conversations_and_empty_text_never_clusters():
    # The same words with other punctuation: not an exact duplicate, a near one (Jaccard 1.0).
    frame = sfts(sft(0, BASE, "Once upon a time."), sft(1, BASE, "Once upon a time!"))
    _, rejected, _ = assert_stage_contract(ExactDedup({"field": "conversation"}), frame)
    assert rejected.height == 0
    _, rejected, _ = assert_stage_contract(NearDedup({"field": "conversation"}), frame)
    assert by_source_id(rejected) == {"1": ("near_duplicate", frame["id"][0])}
    assert rejected["dup_similarity"].to_list() == [1.0]
    # Rows whose compared text has no words have empty signatures and are never duplicates of each other.
    frame = sfts(sft(0, "???", "a"), sft(1, "!!!", "b"))
    _, rejected, _ = assert_stage_contract(NearDedup(), frame)
    assert rejected.height == 0


def test_config_writes_bands_and_rows_and_rejects_half_settings():
    assert (NearDedupConfig().bands, NearDedupConfig().rows) == (17, 7)
    assert (NearDedupConfig(lsh_weights=(0.5, 0.5)).bands, NearDedupConfig(lsh_weights=(0.5, 0.5)).rows) == (9, 13)
    assert NearDedupConfig(bands=32, rows=4).bands == 32
    with pytest.raises(ValueError, match="both bands and rows"):
        NearDedupConfig(bands=8)


def test_shards_give_the_same_clusters_as_one_batch():
    texts = [BASE, "x y z " * 5, BASE + " ok", "tiny", BASE.upper(), "other text " * 4]
    cfg = NearDedupConfig()
    whole = near_duplicate_clusters(sketch(texts), cfg)[0]
    from alignmix.filters.minhash import concat_sketches

    sharded = near_duplicate_clusters(concat_sketches([sketch(texts[:3]), sketch(texts[3:])]), cfg)[0]
    assert whole.tolist() == sharded.tolist() == [0, 1, 0, 3, 0, 5]


def test_data_juicer_demo_duplicates(shared_data):
    texts = [r["text"] for r in jsonl(shared_data / "dedup" / "demo-dataset-deduplication.jsonl")]
    # Distinct answers give each row its own id, so copies of a text are still different rows.
    rows = [sft_row([{"role": "user", "content": t}, {"role": "assistant", "content": f"ok {i}"}], source="dj", source_id=str(i))
            for i, t in enumerate(texts)]
    frame = to_frame(rows, "sft")
    exact_kept, exact_rej, _ = assert_stage_contract(ExactDedup(), frame)
    near_kept, near_rej, _ = assert_stage_contract(NearDedup({"threshold": 0.7}), exact_kept)
    # Reference: Python sets of the same shingles, all pairs, at the same threshold.
    prompts = {str(i): t for i, t in enumerate(texts)}
    sets = {sid: set(shingles(prompts[sid], 5)) for sid in exact_kept["source_id"]}
    ids = list(sets)
    expected_dups = set()
    for a in range(len(ids)):
        for b in range(a + 1, len(ids)):
            s, t = sets[ids[a]], sets[ids[b]]
            if s and t and len(s & t) / len(s | t) >= 0.7:
                expected_dups.add(ids[b])
    assert exact_rej["source_id"].to_list() == EXPECTED_EXACT
    assert sorted(near_rej["source_id"]) == sorted(expected_dups) == EXPECTED_NEAR


def test_the_flow_recipe_in_the_module_docstring_equals_score():
    from alignmix.filters.lsh import band_keys, bucket_pairs, clusters, unique_pairs, verify_pairs
    from alignmix.filters.minhash import concat_sketches

    texts = [BASE, "x y z " * 5, BASE + " ok", "!!!", BASE.upper(), "other text " * 4, BASE + " again"]
    frame = prefs(*[pref(i, "a", "b", prompt=t) for i, t in enumerate(texts)])
    stage = NearDedup()
    cfg = stage.config
    sks = [sketch(texts[:3]), sketch(texts[3:])]
    keys = [band_keys(sk.signatures, cfg.bands, cfg.rows) for sk in sks]
    sk = concat_sketches(sks)
    k = np.concatenate(keys)
    empty = np.diff(sk.offsets) == 0
    pairs = unique_pairs(np.concatenate([bucket_pairs(k[:, b], empty) for b in range(cfg.bands)]))
    pairs, sims = verify_pairs(pairs, sk, cfg.threshold, cfg.verify)
    scored = stage.score_clusters(frame, clusters(len(sk), pairs), pairs, sims)
    assert scored.equals(stage.score(frame))
    assert scored["drop_reason"].to_list() == [None, None, "near_duplicate", None, "near_duplicate", None, "near_duplicate"]


def test_normalized_series_equals_the_normalized_expression(shared_data):
    from alignmix.filters.normalize import normalized, normalized_series

    texts = ["a \t b", "\u3000x\u2028y  ", " ", "", None, "a\u00a0\u00a0b", "Ⅻ  ＦＵＬＬ", "a\n", "x\u0085y", "ﬁ ＡＢ"]
    texts += [r["prompt"] for lang in ("es", "fr", "ja")
              for r in jsonl(shared_data / "multilingual" / f"{lang}_input_data.jsonl")]
    texts += [r["chosen"] for r in jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")]
    series = pl.Series("t", texts, dtype=pl.String)
    want = series.to_frame().select(normalized(pl.col("t"))).to_series()
    got = normalized_series(series)
    assert got.to_list() == want.to_list()
    assert got[:10].to_list() == ["a b", "x y", "", "", None, "a b", "xii full", "a", "x y", "fi ab"]


# What `alignmix dedup` must never import: the heavy stacks of other commands, and scipy (datasketch's band
# optimizer) now that the bands are computed without it.
HEAVY = ("prefect", "torch", "transformers", "matplotlib", "datasets", "scipy", "datasketch", "sklearn")


def test_dedup_of_a_raw_jsonl_drops_what_brute_force_finds_and_imports_nothing_heavy(shared_data, tmp_path):
    """`alignmix dedup FILE` in a fresh interpreter, as a user runs it: real Arena-Hard prompts, each planted
    again with one word changed, once verbatim (ingest drops repeated content) and once in upper case (exact
    dedup); the rows kept equal brute force over every pair (exact Jaccard of the same shingles, first row of
    each connected group kept)."""
    import subprocess
    import sys

    import orjson

    from alignmix.pipeline.schema import normalize_text

    rng = np.random.default_rng(1)
    prompts = [r["prompt"] for r in jsonl(shared_data / "evals" / "arena_hard_v0.1_question.jsonl")]
    bases = [p for p in prompts if len(p.split()) >= 80][:80]  # long enough that one word keeps J above 0.8
    docs = list(bases)
    for b in bases[:40]:
        words = b.split(" ")
        words[int(rng.integers(len(words)))] = "changed"
        docs.append(" ".join(words))
    docs += [bases[0], bases[1].upper()]
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    src = tmp_path / "prompts.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"prompt": d}) + b"\n" for d in docs))
    code = ("import sys\nfrom alignmix.cli import app\n"
            f"sys.argv = ['alignmix', 'dedup', {str(src)!r}, '--out', {str(tmp_path / 'out')!r}]\n"
            "try:\n    app()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            f"print('heavy:', sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "heavy: []" in run.stdout, run.stdout

    # Brute force: repeated content, then normalized text, then connected groups of exact Jaccard >= 0.8.
    first: dict[str, int] = {}
    alive = []
    for i, d in enumerate(docs):
        key = normalize_text(d)
        if d not in {docs[j] for j in alive} and key not in first:
            first[key] = i
            alive.append(i)
    sets = {i: set(shingles(docs[i], 5)) for i in alive}
    parent = {i: i for i in alive}

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    for a, i in enumerate(alive):
        for j in alive[a + 1 :]:
            if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= 0.8:
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    expected = sorted(i for i in alive if root(i) == i)
    kept = pl.read_parquet(tmp_path / "out" / "data" / "*.parquet")
    assert sorted(int(s) for s in kept["source_id"]) == expected
    assert len(expected) == 80  # every planted copy went, no original did
    stats = {s: orjson.loads((tmp_path / "out" / "stats" / f"{s}.json").read_bytes())
             for s in ("exact_dedup", "near_dedup")}
    assert stats["exact_dedup"]["dropped"] == {"exact_duplicate": 1}
    assert stats["near_dedup"]["dropped"] == {"near_duplicate": 40}


def test_threads_change_nothing(shared_data, monkeypatch):
    """Signing, the bands and exact Jaccard on two threads give the clusters, pairs and similarities of one."""
    from alignmix.filters import near_dedup
    from alignmix.filters.lsh import exact_jaccard

    rng = np.random.default_rng(3)
    bases = [r["prompt"] for r in jsonl(shared_data / "evals" / "arena_hard_v0.1_question.jsonl")]
    docs = list(bases)
    for _ in range(1_500):  # near copies: one word changed
        words = bases[int(rng.integers(len(bases)))].split(" ")
        words[int(rng.integers(len(words)))] = "changed"
        docs.append(" ".join(words))
    frame = to_frame([sft_row([{"role": "user", "content": d}, {"role": "assistant", "content": "a"}], source="s",
                              source_id=str(i)) for i, d in enumerate(docs)], "sft")
    cfg = NearDedupConfig(field="first_user")
    results = {}
    for threads in (1, 2):
        monkeypatch.setattr(near_dedup, "THREADS", threads)
        sk = NearDedup(cfg).sketch(frame)
        root, pairs, sims = near_duplicate_clusters(sk, cfg, threads=threads)
        results[threads] = (sk.signatures, sk.hashes, root, pairs, sims, exact_jaccard(pairs, sk, chunk=5_000,
                                                                                          threads=threads))
    for one, two in zip(results[1], results[2]):
        assert np.array_equal(one, two)
    assert len(results[2][3]) == 952 and np.array_equal(results[2][4], results[2][5])
