"""MinHash LSH as array steps that can run per shard and per band: band keys, bucket pairs, verification,
clusters. Nothing here holds an index in memory across calls, so a Dask graph can map each step.

    keys = band_keys(sk.signatures, bands, rows)                    # per shard: (n, bands) uint64
    pairs = np.concatenate([bucket_pairs(keys[:, i]) for i in range(bands)])   # per band, then merged
    pairs, sims = verify_pairs(unique_pairs(pairs), sk, threshold)  # exact Jaccard of the shingle sets
    root = clusters(len(sk), pairs)                                 # union-find: root = smallest index
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import polars as pl

from alignmix.filters.minhash import Sketch

Verify = Literal["exact", "signature", "none"]

# Members of one bucket are paired with up to this many members before them: every pair in buckets of up to
# 32 documents, and a chain (still one connected cluster) in bigger ones, so a bucket of 10,000 exact copies
# costs 31 pairs per document instead of 50 million.
MAX_BUCKET_PAIRS = 32
# Errors this close are ties for `optimal_params`: datasketch's quad integrals (accurate to about 1e-14 on these
# polynomials) break them. The closest non-degenerate pair seen on a grid of thresholds, permutations and
# weights differs by 1e-13, the next by 9e-11.
_TIE = 1e-8


def in_threads(fn: Callable[[Any], Any], items: Iterable[Any], threads: int = 1) -> list[Any]:
    """[fn(x) for x in items], on `threads` threads when more than one (numpy and polars release the GIL in the
    array steps); the results in input order, so the outcome never depends on the thread count."""
    items = list(items)
    if threads <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


@lru_cache(maxsize=64)
def optimal_params(threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)) -> tuple[int, int]:
    """Bands and rows for a Jaccard threshold, by datasketch's own optimization (the weighted false-positive and
    false-negative areas under the LSH S-curve), so the index behaves as `MinHashLSH(threshold, num_perm)`.

    datasketch's `_optimal_param` integrates each (bands, rows) with scipy's `quad` (about 0.8 s, and importing
    scipy costs more). The integrands are polynomials of degree bands * rows <= num_perm, which Gauss-Legendre
    quadrature with num_perm // 2 + 1 nodes (here 8 more) integrates exactly: here all of them at once, in
    milliseconds, and the same choice (checked against datasketch on a grid of thresholds, permutations and
    weights).

    >>> optimal_params(0.8, 128)
    (9, 13)
    >>> optimal_params(0.8, 128, (0.02, 0.98))
    (17, 7)
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be at least 1, got {num_perm}")
    fp_weight, fn_weight = weights
    b, r = _band_grid(num_perm)
    nodes, node_weights = np.polynomial.legendre.leggauss(num_perm // 2 + 8)
    # Nodes mapped onto [0, t] (false positives: candidates below the threshold) and [t, 1] (false negatives).
    s_fp = (nodes + 1.0) * (threshold / 2.0)
    s_fn = threshold + (nodes + 1.0) * ((1.0 - threshold) / 2.0)
    miss_fp = (1.0 - s_fp[None, :] ** r[:, None]) ** b[:, None]  # chance a pair is not a candidate
    miss_fn = (1.0 - s_fn[None, :] ** r[:, None]) ** b[:, None]
    fp = (1.0 - miss_fp) @ node_weights * (threshold / 2.0)
    fn = miss_fn @ node_weights * ((1.0 - threshold) / 2.0)
    error = fp * fp_weight + fn * fn_weight
    near = np.flatnonzero(error - error.min() <= _TIE)
    if len(near) == 1:
        return int(b[near[0]]), int(r[near[0]])
    # Near ties (a weight of 0 flattens the error to rounding noise): datasketch's own integrals decide among
    # them, in its loop order with its strict `<`; every other choice is worse by far more than quad's error.
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    best, best_error = (0, 0), float("inf")
    for k in near:
        bk, rk = int(b[k]), int(r[k])
        fp_k, fn_k = _false_positive_probability(threshold, bk, rk), _false_negative_probability(threshold, bk, rk)
        e = fp_k * fp_weight + fn_k * fn_weight
        if e < best_error:
            best, best_error = (bk, rk), e
    return best


@lru_cache(maxsize=8)
def _band_grid(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (bands, rows) with bands * rows <= num_perm, in datasketch's loop order."""
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    grid = np.array(pairs, dtype=np.float64)
    return grid[:, 0], grid[:, 1]


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
    sig = signatures[:, : bands * rows].reshape(n, bands, rows)
    key = np.full((n, bands), np.uint64(0xCBF29CE484222325), dtype=np.uint64)
    for j in range(rows):  # one row of every band at a time: no uint64 copy of the whole signature matrix
        key ^= sig[:, :, j]
        key *= np.uint64(0x100000001B3)
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
    # Only members of buckets of two or more pair: dropping the others keeps every bucket's members together
    # and in order, so the pairs are the same, found in fewer, shorter passes.
    same = sorted_keys[1:] == sorted_keys[:-1]
    shared = np.zeros(len(order), dtype=bool)
    shared[1:] |= same
    shared[:-1] |= same
    order, sorted_keys = order[shared], sorted_keys[shared]
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
    return _ordered(np.concatenate(out))


def _ordered(pairs: np.ndarray) -> np.ndarray:
    """Each pair as (smaller, larger): `np.sort(pairs, axis=1)`, without a sort call per two-element row."""
    return np.stack([np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])], axis=1)


def _sorted_unique(values: np.ndarray, runs: bool = False) -> np.ndarray:
    """The distinct values, sorted. `runs`: the values are long sorted runs of small values under a rising high
    part (document-major keys), which numpy's stable sort (timsort) merges several times faster than a
    quicksort; otherwise polars' sort (about 2x numpy's on large integer arrays, the same result).

    np.unique in numpy 2.x hashes before sorting, which is many times slower than this on large integer arrays.
    """
    if runs or len(values) < 100_000:
        values = np.sort(values, kind="stable" if runs else None)
    else:
        values = pl.Series(values).sort().to_numpy()
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Distinct (i, j) rows with i < j, sorted: the merge of all bands' pairs."""
    if len(pairs) == 0:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = _ordered(pairs)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    code = _sorted_unique((pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64))
    return np.stack([(code >> np.uint64(32)).astype(np.int64), (code & np.uint64(0xFFFFFFFF)).astype(np.int64)], axis=1)


def _sorted_sets(sk: Sketch, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct shingle hashes of documents `docs` (sorted indices), sorted per document, flat with offsets
    indexed like `docs`. The hashes come as uint64 (ready to be tagged, see `_in_other`)."""
    n = len(docs)
    lens = sk.offsets[docs + 1] - sk.offsets[docs]
    # The documents' hashes in order, picked by a mask (one byte per hash) rather than gathered by index.
    member = np.zeros(len(sk), dtype=bool)
    member[docs] = True
    key = np.repeat(np.arange(n, dtype=np.uint64) << np.uint64(32), lens)
    key |= sk.hashes[np.repeat(member, np.diff(sk.offsets))]
    key = _sorted_unique(key, runs=True)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount((key >> np.uint64(32)).astype(np.int64), minlength=n), out=offsets[1:])
    key &= np.uint64(0xFFFFFFFF)
    return key, offsets


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """Concatenated aranges [starts[k], starts[k] + lens[k])."""
    total = int(lens.sum())
    base = np.repeat(starts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return base + np.arange(total, dtype=np.int64)


def _chunks(work: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """Consecutive [lo, hi) ranges of items whose `work` sums to about `chunk` each (at least one item)."""
    if len(work) == 0:
        return []
    cum = np.cumsum(work)
    bounds = np.searchsorted(cum, np.arange(chunk, int(cum[-1]) + chunk, chunk), side="right")
    edges = np.unique(np.concatenate(([0], bounds, [len(work)])))
    edges = edges[edges <= len(work)]
    return [(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def _in_other(
    values: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int, threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """For each k, whether each element of set a[k] is in set b[k], and each element of b[k] in a[k]: one flag
    per element of the sets a[k] (concatenated in k order), and one per element of the sets b[k]. Sets are
    sorted runs `values[offsets[d]:offsets[d+1]]`.

    Each set is tagged with k in the high 32 bits, so all a-sets and all b-sets of a chunk form two sorted
    arrays, and one `searchsorted` of the first into the second (sorted queries: a walk, not random probes)
    answers every membership both ways at once. Chunks write disjoint flags, so they run on `threads` threads.
    """
    la, lb = offsets[a + 1] - offsets[a], offsets[b + 1] - offsets[b]
    in_b, in_a = np.zeros(int(la.sum()), dtype=bool), np.zeros(int(lb.sum()), dtype=bool)
    first_a, first_b = np.concatenate(([0], np.cumsum(la))), np.concatenate(([0], np.cumsum(lb)))

    def one(span: tuple[int, int]) -> None:
        lo, hi = span
        at_a, at_b = int(first_a[lo]), int(first_b[lo])
        tag = np.arange(hi - lo, dtype=np.uint64) << np.uint64(32)
        query = np.repeat(tag, la[lo:hi]) | values[_ranges(offsets[a[lo:hi]], la[lo:hi])]
        target = np.repeat(tag, lb[lo:hi]) | values[_ranges(offsets[b[lo:hi]], lb[lo:hi])]
        if len(target):
            pos = np.minimum(np.searchsorted(target, query), len(target) - 1)
            hit = target[pos] == query
            in_b[at_a : at_a + len(query)] = hit
            in_a[at_b + pos[hit]] = True  # sets hold distinct values: a hit names one target element

    in_threads(one, _chunks(la + lb, chunk), threads)
    return in_b, in_a


def _intersection_sizes(
    values: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int, threads: int = 1
) -> np.ndarray:
    """|set a[k] ∩ set b[k]| for each k (sets as in `_in_other`), probing the smaller set of each pair; a pair
    with an empty side (a reference's empty differences, most often) is 0 without work."""
    la, lb = offsets[a + 1] - offsets[a], offsets[b + 1] - offsets[b]
    both = np.flatnonzero((la > 0) & (lb > 0))
    swap = la[both] > lb[both]
    small, large = np.where(swap, b[both], a[both]), np.where(swap, a[both], b[both])
    flags, _ = _in_other(values, offsets, small, large, chunk, threads)
    owner = np.repeat(both, np.minimum(la[both], lb[both]))
    return np.bincount(owner[flags], minlength=len(a))


def _subset(
    values: np.ndarray, offsets: np.ndarray, sets: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The elements of sets[k] where `keep` (flags as `_in_other` gives them) holds, as sorted runs with offsets."""
    lens = offsets[sets + 1] - offsets[sets]
    owner = np.repeat(np.arange(len(sets), dtype=np.int64), lens)
    out = np.zeros(len(sets) + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner[keep], minlength=len(sets)), out=out[1:])
    return values[_ranges(offsets[sets], lens)][keep], out


def exact_jaccard(pairs: np.ndarray, sk: Sketch, chunk: int = 2_000_000, threads: int = 1) -> np.ndarray:
    """Jaccard similarity of the shingle-hash sets of each pair, computed for all pairs with array steps, no loop
    per pair.

    Candidate pairs come in groups of near copies, so most pairs are computed from differences: every document
    is compared once with a reference (the first document of its connected group of candidates), keeping what
    the reference has that it lacks (D) and what it has beyond the reference (X). For two documents i, j of a
    group with reference r, |A_i ∩ A_j| = |A_r| - |D_i| - |D_j| + |D_i ∩ D_j| + |X_i ∩ X_j|, where the D and X
    of near copies hold a few shingles each instead of hundreds. A pair whose differences are no smaller than
    its own sets is intersected directly. Either way the counts are exact, so the similarities are the same.

        >>> sk = Sketch(np.zeros((3, 1), np.uint32), np.array([1, 2, 3, 1, 2, 4, 1, 2, 3], np.uint32),
        ...             np.array([0, 3, 6, 9]))
        >>> exact_jaccard(np.array([[0, 1], [0, 2], [1, 2]]), sk).tolist()
        [0.5, 1.0, 0.5]
    """
    sims = np.zeros(len(pairs), dtype=np.float64)
    if len(pairs) == 0:
        return sims
    docs = _sorted_unique(pairs.ravel())
    values, offsets = _sorted_sets(sk, docs)
    lens = np.diff(offsets)
    i, j = np.searchsorted(docs, pairs[:, 0]), np.searchsorted(docs, pairs[:, 1])
    ref = clusters(len(docs), np.stack([i, j], axis=1))  # local indices: each group's first document
    # D and X of every document that is not its group's reference (a reference's are empty).
    moved = np.flatnonzero(ref != np.arange(len(docs)))
    in_ref, in_doc = _in_other(values, offsets, moved, ref[moved], chunk, threads)
    extra_vals, extra_off = _subset(values, offsets, moved, ~in_ref)
    lost_vals, lost_off = _subset(values, offsets, ref[moved], ~in_doc)
    slot = np.full(len(docs), len(moved), dtype=np.int64)  # a reference points at an empty run past the end
    slot[moved] = np.arange(len(moved))
    extra_off = np.append(extra_off, extra_off[-1])
    lost_off = np.append(lost_off, lost_off[-1])
    n_extra, n_lost = np.diff(extra_off), np.diff(lost_off)
    si, sj = slot[i], slot[j]
    by_diff = (n_extra[si] + n_extra[sj] + n_lost[si] + n_lost[sj]) < (lens[i] + lens[j])
    inter = np.zeros(len(pairs), dtype=np.int64)
    d, k = np.flatnonzero(by_diff), np.flatnonzero(~by_diff)
    inter[d] = (
        lens[ref[i[d]]] - n_lost[si[d]] - n_lost[sj[d]]
        + _intersection_sizes(lost_vals, lost_off, si[d], sj[d], chunk, threads)
        + _intersection_sizes(extra_vals, extra_off, si[d], sj[d], chunk, threads)
    )
    inter[k] = _intersection_sizes(values, offsets, i[k], j[k], chunk, threads)
    union = lens[i] + lens[j] - inter
    sims[:] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return sims


def signature_jaccard(pairs: np.ndarray, signatures: np.ndarray) -> np.ndarray:
    """The MinHash estimate of each pair's Jaccard similarity: the share of equal signature values."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    return (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)


def verify_pairs(
    pairs: np.ndarray, sk: Sketch, threshold: float, method: Verify = "exact", threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Keep candidate pairs whose similarity (exact, or estimated from signatures) is at least `threshold`.

    Returns (pairs, similarities); with method "none" every candidate stays, with its signature estimate.
    """
    if method == "exact":
        sims = exact_jaccard(pairs, sk, threads=threads)
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
