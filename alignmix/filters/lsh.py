"""MinHash LSH as array steps that can run per shard and per band: band keys, bucket pairs, verification,
clusters. Nothing here holds an index in memory across calls, so a Dask graph can map each step.

    keys = band_keys(sk.signatures, bands, rows)                    # per shard: (n, bands) uint64
    pairs = np.concatenate([bucket_pairs(keys[:, i]) for i in range(bands)])   # per band, then merged
    pairs, sims = verify_pairs(unique_pairs(pairs), sk, threshold)  # exact Jaccard of the shingle sets
    root = clusters(len(sk), pairs)                                 # union-find: root = smallest index
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np

from alignmix.filters.minhash import Sketch

Verify = Literal["exact", "signature", "none"]

# Members of one bucket are paired with up to this many members before them: every pair in buckets of up to
# 32 documents, and a chain (still one connected cluster) in bigger ones, so a bucket of 10,000 exact copies
# costs 31 pairs per document instead of 50 million.
MAX_BUCKET_PAIRS = 32


@lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """Bands and rows for a Jaccard threshold, by datasketch's own optimization (the weighted false-positive and
    false-negative areas under the LSH S-curve), so the index behaves as `MinHashLSH(threshold, num_perm)`.

    >>> optimal_params(0.8, 128)
    (9, 13)
    """
    from datasketch.lsh import _optimal_param

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    return tuple(_optimal_param(threshold, num_perm, *weights))  # type: ignore[return-value]


def candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """The chance that two documents with this Jaccard similarity share at least one band: 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per document and band (n x bands, uint64): a hash of the band's `rows` signature values.

    Equal bands give equal keys; distinct bands collide with chance 2^-64, and verification removes any such pair.
    """
    n, num_perm = signatures.shape
    if bands * rows > num_perm:
        raise ValueError(f"bands * rows = {bands} * {rows} exceeds the signature length {num_perm}")
    sig = signatures[:, : bands * rows].reshape(n, bands, rows).astype(np.uint64)
    key = np.full((n, bands), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for j in range(rows):
        key = (key ^ sig[:, :, j]) * np.uint64(0x100000001B3)
        key ^= key >> np.uint64(29)
    return key


def bucket_pairs(keys: np.ndarray, empty: np.ndarray | None = None, max_pairs: int = MAX_BUCKET_PAIRS) -> np.ndarray:
    """Candidate pairs (i, j), i < j, of documents whose key in one band is equal.

    `keys` is one band's column over all documents (global order); `empty` marks documents without shingles,
    which never pair. Each member is paired with the up to `max_pairs` members before it in its bucket.
    """
    idx = np.arange(len(keys), dtype=np.int64)
    if empty is not None:
        idx = idx[~empty]
    order = idx[np.argsort(keys[idx], kind="stable")]
    sorted_keys = keys[order]
    out = []
    for d in range(1, max_pairs):
        if d >= len(order):
            break
        same = sorted_keys[d:] == sorted_keys[:-d]
        if not same.any():
            break
        out.append(np.stack([order[:-d][same], order[d:][same]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(out)
    return np.sort(pairs, axis=1)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    # np.unique in numpy 2.x hashes before sorting, which is many times slower than this on large integer arrays.
    values = np.sort(values)
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct (i, j) rows with i < j, sorted: the merge of all bands' pairs."""
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.sort(pairs, axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    code = _sorted_unique((pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64))
    return np.stack([(code >> np.uint64(32)).astype(np.int64), (code & np.uint64(0xFFFFFFFF)).astype(np.int64)], axis=1)


def _sorted_sets(sk: Sketch, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct shingle hashes of documents `docs` (sorted indices), sorted per document, flat with offsets
    indexed like `docs`."""
    n = len(docs)
    lens = sk.offsets[docs + 1] - sk.offsets[docs]
    doc = np.repeat(np.arange(n, dtype=np.int64), lens)
    key = (doc.astype(np.uint64) << np.uint64(32)) | sk.hashes[_ranges(sk.offsets[docs], lens)].astype(np.uint64)
    key = _sorted_unique(key)
    doc = (key >> np.uint64(32)).astype(np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc, minlength=n), out=offsets[1:])
    return (key & np.uint64(0xFFFFFFFF)).astype(np.uint32), offsets


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[k], starts[k] + lens[k])."""
    total = int(lens.sum())
    base = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return base + np.arange(total, dtype=np.int64)


def exact_jaccard(pairs: np.ndarray, sk: Sketch, chunk: int = 4_000_000) -> np.ndarray:
    """Jaccard similarity of the shingle-hash sets of each pair, computed for all pairs with sorts, no loop per pair."""
    sims = np.zeros(len(pairs), dtype=np.float64)
    if len(pairs) == 0:
        return sims
    docs = _sorted_unique(pairs.ravel())
    values, offsets = _sorted_sets(sk, docs)
    lens = np.diff(offsets)
    i, j = np.searchsorted(docs, pairs[:, 0]), np.searchsorted(docs, pairs[:, 1])
    work = lens[i] + lens[j]
    # Chunks of pairs, about `chunk` set elements each.
    bounds = np.searchsorted(np.cumsum(work), np.arange(chunk, int(work.sum()) + chunk, chunk), side="right")
    lo = 0
    for hi in np.unique(np.append(bounds, len(pairs))):
        if hi <= lo:
            continue
        k = np.arange(lo, hi, dtype=np.int64)
        li, lj = lens[i[k]], lens[j[k]]
        tag = np.concatenate([np.repeat(k - lo, li), np.repeat(k - lo, lj)]).astype(np.uint64)
        vals = np.concatenate([values[_ranges(offsets[i[k]], li)], values[_ranges(offsets[j[k]], lj)]])
        merged = np.sort((tag << np.uint64(32)) | vals.astype(np.uint64))
        dup = merged[1:] == merged[:-1]
        inter = np.bincount((merged[1:][dup] >> np.uint64(32)).astype(np.int64), minlength=hi - lo)
        union = li + lj - inter
        sims[lo:hi] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        lo = hi
    return sims


def signature_jaccard(pairs: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """The MinHash estimate of each pair's Jaccard similarity: the share of equal signature values."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    return (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)


def verify_pairs(
    pairs: np.ndarray, sk: Sketch, threshold: float, method: Verify = "exact"
) -> tuple[np.ndarray, np.ndarray]:
    """Keep candidate pairs whose similarity (exact, or estimated from signatures) is at least `threshold`.

    Returns (pairs, similarities); with method "none" every candidate stays, with its signature estimate.
    """
    if method == "exact":
        sims = exact_jaccard(pairs, sk)
    elif method in ("signature", "none"):
        sims = signature_jaccard(pairs, sk.signatures)
    else:
        raise ValueError(f"unknown verification {method!r}; use 'exact', 'signature' or 'none'")
    if method == "none":
        return pairs, sims
    ok = sims >= threshold
    return pairs[ok], sims[ok]


def clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find over pairs: for each of n documents, the smallest index in its connected cluster."""
    parent = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return parent
    # Vectorized union-find: hook every edge's larger root under its smaller root, then compress, until stable.
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    while True:
        ra, rb = parent[a], parent[b]
        lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
        moving = lo != hi
        if not moving.any():
            break
        np.minimum.at(parent, hi[moving], lo[moving])
        while True:  # path compression: point every node at its root
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def keep_per_cluster(root: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
    """The kept document of each document's cluster: the first one, or the highest score (ties: the first).

    Nulls (NaN) score lowest. Returns an index array: `kept[i]` is the document kept for i's cluster.
    """
    n = len(root)
    if scores is None:
        best = root.copy()
    else:
        s = np.where(np.isnan(scores), -np.inf, scores)
        order = np.lexsort((np.arange(n), -s, root))  # by cluster, then score desc, then position
        first = np.ones(n, dtype=bool)
        first[1:] = root[order][1:] != root[order][:-1]
        winner = np.empty(n, dtype=np.int64)
        winner[root[order][first]] = order[first]
        best = winner[root]
    return best
