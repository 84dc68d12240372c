"""Vectorized MinHash signatures that equal `datasketch.MinHash` hash values exactly.

datasketch (2.x, default scheme "affine32") hashes each shingle to 32 bits, pre-mixes it with the MurmurHash3
finalizer and applies `num_perm` permutations `a_k * h + b_k mod 2^32`, keeping the minimum per permutation.
Here the same arithmetic runs over all shingles of a batch of documents at once (numpy, permutation-major
blocks reduced with `np.minimum.reduceat`), with the same `a_k, b_k` (taken from datasketch itself).

Shingles are word n-grams (default 5) of the text in NFKC, lower case, split into `\\w+` words; a document
shorter than n words is one shingle of all its words, an empty one has none (an all-max signature, like an
empty datasketch MinHash). Two shingle hash functions:

- `"tabulation"` (default, fast): words are found and hashed straight from the texts' Arrow bytes (simple
  tabulation hashing of their UTF-8 bytes, `word_hash32`); a shingle's hash folds its word hashes
  (`h = h * P + w`, mod 2^32). datasketch's own MurmurHash3 pre-mix then scrambles it before the
  permutations, as it does for any `hashfunc`. `shingle_hash32` is the same function on one shingle
  (b"w1 w2 w3 w4 w5"): give it to datasketch as `hashfunc` and the signatures match.
- `"sha1"`: datasketch's own default `sha1_hash32` on the shingle's UTF-8 bytes (a Python call per shingle,
  so slower); the signatures match a plain `datasketch.MinHash()`.

    >>> sk = sketch(["the cat sat on the mat today"], ngram=5)
    >>> m = datasketch.MinHash(num_perm=128, seed=1, hashfunc=shingle_hash32)      # doctest: +SKIP
    >>> m.update_batch(shingles("the cat sat on the mat today", 5))                 # doctest: +SKIP
    >>> bool((m.hashvalues == sk.signatures[0]).all())                              # doctest: +SKIP
    True
"""

from __future__ import annotations

import hashlib
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np
import polars as pl
import pyarrow as pa

ShingleHash = Literal["tabulation", "sha1"]

WORD_PATTERN = r"\w+"
# An odd 32-bit constant (the golden ratio's fraction): folds word hashes into an order-sensitive shingle hash.
# 32-bit arithmetic on purpose: numpy vectorizes it (SIMD), and a shingle hash is 32 bits anyway.
_FOLD = np.uint32(0x9E3779B9)
_FOLD_INT = int(_FOLD)
# Shingles per block of the permutation step: (num_perm x block) uint32 stays within a few MiB of cache.
_BLOCK = 8_192


@dataclass(frozen=True)
class Sketch:
    """MinHash state of a batch (a shard) of documents.

    `signatures[i]` is document i's MinHash (uint32, one column per permutation); `hashes[offsets[i]:offsets[i+1]]`
    are its shingle hashes (unsorted, may repeat), kept for exact Jaccard verification of candidate pairs.
    """

    signatures: np.ndarray
    hashes: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return self.signatures.shape[0]


def words(text: str) -> list[str]:
    """The words shingles are made of: `\\w+` runs (Unicode, as the Rust regex engine defines them: letters,
    marks, digits, connectors) of the NFKC, lower-cased text.

    >>> words("Hello, WORLD: it's 2024!")
    ['hello', 'world', 'it', 's', '2024']
    """
    return word_lists([text])[0]


def word_lists(texts: Sequence[str] | pl.Series) -> list[list[str]]:
    """`words` of many texts at once (vectorized)."""
    return _word_lists(texts).to_list()


def shingles(text: str, ngram: int = 5) -> list[bytes]:
    """The word n-gram shingles of one text, as datasketch takes them (UTF-8 bytes, words joined by a space).

    >>> shingles("a b c", 2)
    [b'a b', b'b c']
    """
    return _shingles_of(words(text), ngram)


def _shingles_of(w: list[str], ngram: int) -> list[bytes]:
    if not w:
        return []
    if len(w) < ngram:
        return [" ".join(w).encode()]
    return [" ".join(w[i : i + ngram]).encode() for i in range(len(w) - ngram + 1)]


def shingle_hash32(shingle: bytes) -> int:
    """The "tabulation" hash of one shingle (words joined by single spaces), for `datasketch.MinHash(hashfunc=)`."""
    h = 0
    for word in shingle.split(b" "):
        h = (h * _FOLD_INT + word_hash32(word)) & 0xFFFFFFFF
    return h


def _fmix32(h: np.ndarray) -> np.ndarray:
    """datasketch's `_fmix` for 32-bit values (the MurmurHash3 finalizer), on a uint32 array."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@lru_cache(maxsize=16)
def permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's permutation parameters `(a, b)` (uint32) for `num_perm` and `seed`.

    Drawn as `datasketch.MinHash(scheme="affine32")._init_permutations` draws them (odd `a`, any `b`, from
    `np.random.RandomState(seed)`), without importing datasketch, whose package import pulls in scipy (about
    a second); tests/filters/test_minhash.py checks them against datasketch's own.
    """
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.ascontiguousarray(a), np.ascontiguousarray(b)


# A word's hash is a polynomial over its bytes, each byte first replaced by a random 32-bit value:
#   h = sum_k BYTE[b_k] * P^(len-1-k)  (mod 2^32),
# computed for every word at once from one running sum over all bytes (see `_token_hashes`). BYTE comes from
# SHAKE-256 of a fixed key, so it is the same on every machine and numpy version.
_BYTE = np.frombuffer(hashlib.shake_256(b"alignmix word hash v1").digest(256 * 4), dtype="<u4").astype(np.uint32)
_P = 0x01000193  # the 32-bit FNV prime: odd, so invertible mod 2^32
_P_INV = pow(_P, -1, 1 << 32)
_powers: dict[str, tuple[np.ndarray, np.ndarray]] = {"tables": (np.ones(1, dtype=np.uint32), np.ones(1, dtype=np.uint32))}
_powers_lock = threading.Lock()
# Bytes that belong to words once the text is prepared (see `_prepared`): ASCII [0-9a-z_] and every non-ASCII byte.
_WORD_BYTE = np.zeros(256, dtype=bool)
_WORD_BYTE[[*range(48, 58), *range(97, 123), 95, *range(128, 256)]] = True


def word_hash32(word: bytes) -> int:
    """The 32-bit hash of one word (its UTF-8 bytes); `_token_hashes` computes the same for all words at once."""
    h = 0
    for byte in word:
        h = (h * _P + int(_BYTE[byte])) & 0xFFFFFFFF
    return h


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and P^-i (mod 2^32) for i < n, grown on demand and kept.

    Shards are signed on several threads at once: both tables are built before they are published together,
    so a reader never sees a grown P^i beside a short P^-i.
    """
    tables = _powers["tables"]
    if tables[0].size < n:
        with _powers_lock:
            tables = _powers["tables"]
            if tables[0].size < n:
                size = max(n, 2 * tables[0].size)
                grown = []
                for base in (_P, _P_INV):
                    steps = np.full(size, base, dtype=np.uint32)
                    steps[0] = 1
                    grown.append(np.multiply.accumulate(steps, dtype=np.uint32))
                tables = _powers["tables"] = (grown[0], grown[1])
    return tables


def _prepared(texts: Sequence[str] | pl.Series) -> pl.Series:
    """Lower-cased text in which words are exactly the runs of `_WORD_BYTE` bytes.

    An ASCII row only needs lower case (its `\\w` is [0-9a-z_]). A row with other characters gets NFKC, lower
    case and every run of non-ASCII non-word characters replaced by a space, so its remaining non-ASCII bytes
    are all inside words (ASCII punctuation already separates words at the byte level). Either way the words
    are those of `\\w+` (Unicode, Rust regex) on the NFKC, lower-cased text.
    """
    s = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)
    s = s.cast(pl.String).fill_null("")
    other = s.str.contains(r"[^\x00-\x7F]").arg_true()
    s = s.str.to_lowercase()
    if other.len():
        # Python's NFKC returns text that is already normalized after a quick check (2x polars' here), and only
        # non-ASCII non-word runs need the regex: the byte tokenizer already splits on ASCII punctuation.
        nfkc = pl.Series([unicodedata.normalize("NFKC", t) for t in s.gather(other).to_list()], dtype=pl.String)
        s = s.scatter(other, nfkc.str.to_lowercase().str.replace_all(r"[\W&&[^\x00-\x7F]]+", " "))
    return s


def _word_lists(texts: Sequence[str] | pl.Series) -> pl.Series:
    return _prepared(texts).str.extract_all(WORD_PATTERN)


def _token_hashes(prepared: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every word, flat in text order; number of words per text), straight from the Arrow bytes."""
    arr = prepared.to_arrow().cast(pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data = data[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    size = data.size
    if size == 0:
        return np.zeros(0, dtype=np.uint32), np.zeros(n, dtype=np.int64)
    is_word = np.zeros(size + 2, dtype=np.int8)
    is_word[1:-1] = _WORD_BYTE[data]
    edge = np.diff(is_word)  # +1 where a word starts, -1 one past where it ends
    is_start, is_end = edge == 1, edge == -1
    # A word never runs from one text into the next: split runs that cross a text boundary (marked in the masks,
    # not sorted into the positions: most texts end and begin with a word byte).
    inner = offsets[1:-1]
    cross = inner[(inner > 0) & (inner < size)]
    cross = cross[(is_word[cross] == 1) & (is_word[cross + 1] == 1)]
    is_start[cross] = True
    is_end[cross] = True
    starts, ends = np.flatnonzero(is_start), np.flatnonzero(is_end)
    n_words = np.bincount(np.searchsorted(offsets, starts, side="right") - 1, minlength=n).astype(np.int64)
    # sum over a word of BYTE[b_k] * P^-k, times P^(end-1), is sum BYTE[b_k] * P^(end-1-k): the polynomial.
    p, inv = _power_tables(size + 1)
    running = np.zeros(size + 1, dtype=np.uint32)
    np.cumsum(_BYTE[data] * inv[:size], dtype=np.uint32, out=running[1:])
    return (running[ends] - running[starts]) * p[ends - 1], n_words


def shingle_hashes(
    texts: Sequence[str] | pl.Series, ngram: int = 5, hash: ShingleHash = "tabulation"
) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of every text, flat, with offsets: text i owns `hashes[offsets[i]:offsets[i+1]]`."""
    if ngram < 1:
        raise ValueError(f"ngram must be at least 1, got {ngram}")
    if hash == "sha1":
        lists = _word_lists(texts)
        n_words = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    elif hash == "tabulation":
        tok, n_words = _token_hashes(_prepared(texts))
    else:
        raise ValueError(f"unknown shingle hash {hash!r}; use 'tabulation' or 'sha1'")
    n_shingles = np.where(n_words >= ngram, n_words - ngram + 1, np.minimum(n_words, 1))
    offsets = np.zeros(len(n_words) + 1, dtype=np.int64)
    np.cumsum(n_shingles, out=offsets[1:])
    if hash == "sha1":
        return _sha1_shingle_hashes(lists, ngram), offsets
    if tok.size == 0:
        return np.zeros(0, dtype=np.uint32), offsets

    word_starts = np.zeros(len(n_words), dtype=np.int64)
    np.cumsum(n_words[:-1], out=word_starts[1:])
    out = np.empty(int(offsets[-1]), dtype=np.uint32)
    long_docs = n_words >= ngram
    # Start positions of every full n-gram: for each long doc, word_starts .. word_starts + n_words - ngram.
    counts = n_shingles[long_docs]
    starts = np.repeat(word_starts[long_docs] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
    starts += np.arange(int(counts.sum()), dtype=np.int64)
    long_slots = np.repeat(long_docs, n_shingles)
    acc = tok.copy()  # acc[p] = fold of words p .. p+j after step j
    short_docs = (n_words >= 1) & (n_words < ngram)
    short_slots = offsets[:-1][short_docs]
    short_len = n_words[short_docs]
    short_first = word_starts[short_docs]
    short_vals = np.zeros(short_docs.sum(), dtype=np.uint32)
    for j in range(ngram):
        if j:
            acc = acc[:-1] * _FOLD + tok[j:]
        done = short_len == j + 1
        short_vals[done] = acc[short_first[done]]
    out[long_slots] = acc[starts]
    out[short_slots] = short_vals
    return out, offsets


def sha1_hash32(data: bytes) -> int:
    """datasketch's default `hashfunc` (`datasketch.hashfunc.sha1_hash32`: the first 4 bytes of SHA-1, little
    endian), without importing datasketch (whose package import pulls in scipy)."""
    return int.from_bytes(hashlib.sha1(data).digest()[:4], "little")


def _sha1_shingle_hashes(lists: pl.Series, ngram: int) -> np.ndarray:
    out: list[int] = []
    for w in lists.to_list():
        if not w:
            continue
        if len(w) < ngram:
            out.append(sha1_hash32(" ".join(w).encode()))
        else:
            out.extend(sha1_hash32(" ".join(w[i : i + ngram]).encode()) for i in range(len(w) - ngram + 1))
    return np.asarray(out, dtype=np.uint32)


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """MinHash signatures (n_docs x num_perm, uint32) of the shingle hash sets given flat with offsets."""
    a, b = permutations(num_perm, seed)
    n_docs = len(offsets) - 1
    out = np.full((n_docs, num_perm), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    if n_docs == 0 or hashes.size == 0:
        return out
    mixed = _fmix32(hashes.astype(np.uint32, copy=False))
    nonempty = np.flatnonzero(offsets[1:] > offsets[:-1])
    doc_starts = offsets[:-1][nonempty]
    # Blocks of whole documents, about _BLOCK shingles each (a document longer than a block is its own block).
    cuts = np.unique(np.searchsorted(doc_starts, np.arange(0, int(offsets[-1]), _BLOCK), side="left"))
    cuts = np.append(cuts, len(nonempty))
    buf = np.empty((num_perm, _BLOCK), dtype=np.uint32)
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        if lo == hi:
            continue
        s0, s1 = int(doc_starts[lo]), int(offsets[nonempty[hi - 1] + 1])
        width = s1 - s0
        block = buf[:, :width] if width <= _BLOCK else np.empty((num_perm, width), dtype=np.uint32)
        np.multiply(a[:, None], mixed[None, s0:s1], out=block)
        block += b[:, None]
        out[nonempty[lo:hi]] = np.minimum.reduceat(block, doc_starts[lo:hi] - s0, axis=1).T
    return out


def sketch(
    texts: Sequence[str] | pl.Series,
    ngram: int = 5,
    num_perm: int = 128,
    seed: int = 1,
    hash: ShingleHash = "tabulation",
    workers: int = 1,
    chunk: int = 8192,
) -> Sketch:
    """Shingle, hash and sign one batch (a shard) of texts: the per-shard step of near-duplicate detection.

    Texts go in chunks of `chunk` (which keeps the tokenizer's per-byte arrays in cache), on `workers` threads
    (polars and numpy release the GIL). The result is the same for any chunking: each text's signature depends
    on that text alone. One thread by default: on a busy machine threads contend (bench/dedup.py measures
    both), and shards are the flow's unit of parallelism.
    """
    series = texts if isinstance(texts, pl.Series) else pl.Series(list(texts), dtype=pl.String)

    def one(part: pl.Series) -> Sketch:
        hashes, offsets = shingle_hashes(part, ngram, hash)
        return Sketch(signatures(hashes, offsets, num_perm, seed), hashes, offsets)

    if series.len() <= chunk:
        return one(series)
    # Chunks also keep the per-byte arrays of the tokenizer small enough to stay in cache.
    parts = [series.slice(i, chunk) for i in range(0, series.len(), chunk)]
    if workers <= 1:
        return concat_sketches([one(p) for p in parts])
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return concat_sketches(list(pool.map(one, parts)))


def concat_sketches(parts: Sequence[Sketch]) -> Sketch:
    """Shard sketches, in shard order, as one (document indices become global)."""
    if not parts:
        raise ValueError("no sketches to concatenate")
    if len(parts) == 1:
        return parts[0]  # one shard: its offsets already start at 0
    hashes = np.concatenate([p.hashes for p in parts])
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for p in parts:
        offsets.append(p.offsets[1:] + base)
        base += int(p.offsets[-1])
    return Sketch(np.concatenate([p.signatures for p in parts]), hashes, np.concatenate(offsets))
