"""MinHash signatures equal datasketch's exactly; the LSH steps against brute-force references."""

import subprocess
import sys

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from alignmix.filters.lsh import (
    band_keys,
    bucket_pairs,
    clusters,
    exact_jaccard,
    keep_per_cluster,
    optimal_params,
    signature_jaccard,
    unique_pairs,
)
from alignmix.filters.minhash import concat_sketches, permutations, shingle_hash32, shingles, sketch, words
from tests.filters.rows import jsonl

EDGE_TEXTS = [
    "The cat sat on the mat today, and then it ran away!",
    "",
    "   ",
    "two words",
    "Der Bär läuft schnell über die Brücke, ﬁnally ＦＵＬＬＷＩＤＴＨ text",
    "数据 去重 测试 句子 一 二 三 四 五 六",
    "a b c d e",
]


def _datasketch(shingle_list, seed=1, hashfunc=None):
    m = MinHash(num_perm=128, seed=seed, **({"hashfunc": hashfunc} if hashfunc else {}))
    if shingle_list:
        m.update_batch(shingle_list)
    return m.hashvalues


@pytest.mark.parametrize("num_perm,seed", [(128, 7), (128, 1), (256, 0), (16, 12345), (1, 2)])
def test_permutations_are_datasketchs(num_perm, seed):
    a, b = permutations(num_perm, seed)
    ref = MinHash(num_perm=num_perm, seed=seed).permutations
    assert a.dtype == b.dtype == np.uint32
    assert np.array_equal(a, ref[0]) and np.array_equal(b, ref[1])


@pytest.mark.parametrize("hash_name", ["tabulation", "sha1"])
def test_signatures_equal_datasketch_on_edge_cases(hash_name):
    sk = sketch(EDGE_TEXTS, ngram=5, num_perm=128, seed=3, hash=hash_name)
    hashfunc = shingle_hash32 if hash_name == "tabulation" else None  # sha1: datasketch's default hash function
    for i, text in enumerate(EDGE_TEXTS):
        assert np.array_equal(sk.signatures[i], _datasketch(shingles(text, 5), 3, hashfunc)), (i, text)
    assert (sk.signatures[1] == 0xFFFFFFFF).all()  # no shingles: an empty MinHash


@pytest.mark.parametrize("hash_name", ["tabulation", "sha1"])
def test_signatures_equal_datasketch_on_real_text(shared_data, hash_name):
    records = jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")[:120]
    texts = [r["chosen"] for r in records] + [r["prompt"] for r in records]
    sk = sketch(texts, ngram=5, hash=hash_name)
    hashfunc = shingle_hash32 if hash_name == "tabulation" else None
    mismatched = [i for i, t in enumerate(texts) if not np.array_equal(sk.signatures[i], _datasketch(shingles(t, 5), 1, hashfunc))]
    assert mismatched == []


def test_a_document_longer_than_a_block_and_sharding_give_the_same_signatures():
    rng = np.random.default_rng(0)
    long_doc = " ".join(f"w{x}" for x in rng.integers(0, 5000, 40_000))
    texts = ["short one here", long_doc, "another short text with some words"]
    whole = sketch(texts)
    assert np.array_equal(whole.signatures[1], _datasketch(shingles(long_doc, 5), 1, shingle_hash32))
    parts = concat_sketches([sketch(texts[:2]), sketch(texts[2:])])  # shards computed apart, joined in order
    assert np.array_equal(parts.signatures, whole.signatures)
    assert np.array_equal(parts.offsets, whole.offsets) and np.array_equal(parts.hashes, whole.hashes)


def test_words_and_shingles():
    assert words("Hello, WORLD: it's 2024!") == ["hello", "world", "it", "s", "2024"]
    assert shingles("a b c", 2) == [b"a b", b"b c"]
    assert shingles("a b", 5) == [b"a b"]
    assert shingles("", 5) == []


def test_optimal_params_match_datasketch_lsh():
    for threshold in (0.5, 0.8, 0.9):
        lsh = MinHashLSH(threshold=threshold, num_perm=128)
        assert optimal_params(threshold, 128) == (lsh.b, lsh.r)


# (threshold, num_perm, weights) where two choices are within 1e-8 (a weight of 0 leaves only rounding noise,
# and 0.37 / 128 / (0.001, 0.999) has two choices 5e-10 apart): datasketch's own integrals must decide these.
NEAR_TIES = [(0.8, 64, (0.0, 1.0)), (0.6, 128, (1.0, 0.0)), (0.37, 128, (0.001, 0.999)), (0.5, 32, (1.0, 0.0))]


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95])
def test_optimal_params_equal_datasketchs_optimizer_on_a_grid(threshold):
    from datasketch.lsh import _optimal_param

    for num_perm in (16, 64, 128):
        for weights in ((0.5, 0.5), (0.02, 0.98), (0.98, 0.02), (0.1, 0.9)):
            optimal_params.cache_clear()
            assert optimal_params(threshold, num_perm, weights) == _optimal_param(threshold, num_perm, *weights), (
                threshold, num_perm, weights)


@pytest.mark.parametrize("threshold,num_perm,weights", NEAR_TIES)
def test_optimal_params_break_near_ties_as_datasketch(threshold, num_perm, weights):
    from datasketch.lsh import _optimal_param

    optimal_params.cache_clear()
    assert optimal_params(threshold, num_perm, weights) == _optimal_param(threshold, num_perm, *weights)


def test_band_choice_and_permutations_import_neither_scipy_nor_datasketch():
    code = ("import sys; from alignmix.filters.lsh import optimal_params; from alignmix.filters.minhash import sketch; "
            "print(optimal_params(0.8, 128, (0.02, 0.98)), sketch(['a b c d e f']).signatures[0, :2].tolist(), "
            "sorted(m for m in ('scipy', 'datasketch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    want = MinHash(num_perm=128, seed=1, hashfunc=shingle_hash32)
    want.update_batch(shingles("a b c d e f", 5))
    assert out == f"(17, 7) {want.hashvalues[:2].tolist()} []"


def test_bucket_pairs_pair_every_member_of_a_bucket_and_skip_empty_documents():
    keys = np.array([5, 7, 5, 5, 9, 7, 1], dtype=np.uint64)
    empty = np.array([False, False, False, False, False, False, True])
    assert sorted(map(tuple, bucket_pairs(keys, empty).tolist())) == [(0, 2), (0, 3), (1, 5), (2, 3)]
    # A big bucket is chained (each member paired with the max_pairs - 1 before it), still one cluster.
    big = bucket_pairs(np.zeros(10, dtype=np.uint64), max_pairs=3)
    assert len(big) == 9 + 8
    assert (clusters(10, big) == 0).all()


def test_band_keys_equal_exactly_when_bands_equal():
    sig = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [0, 2, 3, 4]], dtype=np.uint32)
    keys = band_keys(sig, bands=2, rows=2)
    assert keys[0, 0] == keys[1, 0] and keys[0, 0] != keys[2, 0]
    assert keys[0, 1] == keys[2, 1] and keys[0, 1] != keys[1, 1]
    with pytest.raises(ValueError, match="exceeds"):
        band_keys(sig, bands=3, rows=2)


def test_exact_jaccard_equals_python_sets_and_signature_estimate_is_close():
    texts = [
        "one two three four five six seven eight nine ten eleven twelve",
        "one two three four five six seven eight nine ten eleven thirteen",
        "completely different words that share nothing with the others here",
        "one two three four five six seven eight nine ten eleven twelve",
    ]
    sk = sketch(texts)
    pairs = np.array([[0, 1], [0, 2], [0, 3], [1, 3]])
    got = exact_jaccard(pairs, sk)
    sets = [set(shingles(t, 5)) for t in texts]
    want = [len(sets[i] & sets[j]) / len(sets[i] | sets[j]) for i, j in pairs]
    assert np.allclose(got, want)
    assert np.array_equal(exact_jaccard(pairs, sk, chunk=10), got)  # chunks smaller than one pair's sets
    assert got[2] == 1.0 and abs(signature_jaccard(pairs, sk.signatures)[0] - want[0]) < 0.2


def test_exact_jaccard_of_near_copy_groups_equals_python_sets(shared_data):
    """Groups of edited copies of real prompts, chained so later members drift from their group's first one,
    and a few pairs across groups (which join groups under one far reference): the counts from differences to
    a reference, and the direct ones, equal plain set arithmetic."""
    rng = np.random.default_rng(0)
    bases = [r["prompt"] for r in jsonl(shared_data / "evals" / "ifeval_input_data.jsonl")[:60]]
    texts, groups = [], []
    for base in bases:
        words, group = base.split(), []
        for _ in range(int(rng.integers(1, 9))):  # each copy edits the one before: a chain drifting away
            group.append(len(texts))
            texts.append(" ".join(words))
            for _ in range(int(rng.integers(0, 4))):
                words[int(rng.integers(len(words)))] = f"edit{int(rng.integers(1000))}"
        groups.append(group)
    texts += ["", "tiny", "short text here"]
    sk = sketch(texts)
    sets = [set(sk.hashes[sk.offsets[i] : sk.offsets[i + 1]].tolist()) for i in range(len(texts))]
    within = [(i, j) for g in groups for a, i in enumerate(g) for j in g[a + 1 :]]
    across = [tuple(sorted(rng.choice(len(texts), 2, replace=False).tolist())) for _ in range(10)]
    pairs = unique_pairs(np.array(within + across + [(len(texts) - 3, len(texts) - 2)]))
    want = [len(sets[i] & sets[j]) / len(sets[i] | sets[j]) if sets[i] | sets[j] else 0.0 for i, j in pairs]
    got = exact_jaccard(pairs, sk)
    assert got.tolist() == want  # the same integer counts, the same division: equal to the last bit
    assert np.array_equal(exact_jaccard(pairs, sk, chunk=50), got)
    assert 0.1 < np.mean(np.array(want) >= 0.8) < 0.9  # near copies and distant pairs both


def test_unique_pairs_clusters_and_keep_rules():
    pairs = unique_pairs(np.array([[4, 3], [3, 4], [1, 4], [2, 5], [2, 2]]))
    assert pairs.tolist() == [[1, 4], [2, 5], [3, 4]]
    root = clusters(6, pairs)
    assert root.tolist() == [0, 1, 2, 1, 1, 2]
    assert keep_per_cluster(root).tolist() == [0, 1, 2, 1, 1, 2]
    scores = np.array([0.0, 1.0, np.nan, 5.0, 5.0, 1.0])
    # Highest score wins; a tie goes to the first; a null score loses to any number.
    assert keep_per_cluster(root, scores).tolist() == [0, 3, 5, 3, 3, 5]


def test_threads_and_chunks_do_not_change_the_sketch():
    texts = [f"document number {i} says " + " ".join(f"w{(i * 7 + k) % 50}" for k in range(30)) for i in range(300)]
    one = sketch(texts, workers=1)
    many = sketch(texts, workers=3, chunk=64)
    assert np.array_equal(one.signatures, many.signatures)
    assert np.array_equal(one.hashes, many.hashes) and np.array_equal(one.offsets, many.offsets)


def test_word_hashes_from_bytes_equal_hashes_of_the_regex_words(shared_data):
    from alignmix.filters.minhash import _prepared, _token_hashes, word_hash32, word_lists

    texts = [r["prompt"] for lang in ("es", "fr", "ja") for r in jsonl(shared_data / "multilingual" / f"{lang}_input_data.jsonl")]
    texts += [r["chosen"] for r in jsonl(shared_data / "ultrafeedback" / "eval_clean.jsonl")] + ["", "  ", None, "x"]
    hashes, n_words = _token_hashes(_prepared(texts))
    expected = [word_hash32(w.encode()) for ws in word_lists(texts) for w in ws]
    assert hashes.tolist() == expected
    assert n_words.tolist() == [len(ws) for ws in word_lists(texts)]


def test_shards_signed_on_threads_at_once_equal_serial_signing(shared_data):
    """The word-hash power tables grow on first use; shards signed concurrently from a cold start must still
    agree with one-at-a-time signing (a torn table once broadcast a length-1 P^-i and changed the hashes)."""
    texts = [r["prompt"] for r in jsonl(shared_data / "ultrafeedback/eval_clean.jsonl")][:800]
    shards = [texts[i::8] for i in range(8)]
    expected = [sketch(s).signatures for s in shards]
    import sys

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so a torn update would be seen
    try:
        _sign_concurrently(shards, expected)
    finally:
        sys.setswitchinterval(switch)


def _sign_concurrently(shards, expected):
    import threading

    from alignmix.filters import minhash

    for _ in range(20):
        minhash._powers["tables"] = (np.ones(1, dtype=np.uint32), np.ones(1, dtype=np.uint32))
        start, results = threading.Barrier(len(shards)), [None] * len(shards)

        def sign(i):
            start.wait()
            results[i] = sketch(shards[i]).signatures

        threads = [threading.Thread(target=sign, args=(i,)) for i in range(len(shards))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, want in zip(results, expected):
            assert np.array_equal(got, want)
