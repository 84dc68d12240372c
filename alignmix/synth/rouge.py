"""ROUGE-L F-measure with the reference tokenization, and a fast near-duplicate filter built on it.

The tokenization is rouge_score's `RougeScorer(["rougeL"], use_stemmer=False)`: lowercase, every run of
characters outside [a-z0-9] becomes a space, split on whitespace. The score is the LCS F-measure exactly as
rouge_score computes it (precision against the second text, recall against the first), so values match the
reference Self-Instruct/Alpaca numbers bit for bit:

    >>> rouge_l("Answer the following question.", "What can you infer from the following conversation?")
    0.3333333333333333

`RougeFilter` keeps an instruction only if its ROUGE-L against every kept instruction is at most the threshold.
It computes the LCS of one new instruction against all kept ones at once: Hyyro's bit-parallel LCS, vectorized
over the kept set with numpy (one uint64 word per kept instruction), after a length bound that skips kept
instructions too short or too long to reach the threshold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np

_NON_ALNUM = re.compile(r"[^a-z0-9]+")

# 0.7: the ROUGE-L cut-off of the Self-Instruct paper (a new instruction more similar than this to any kept
# instruction is dropped).
ROUGE_THRESHOLD = 0.7


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming.

    >>> rouge_tokens("Rewrite the sentence: it's 5 o'clock!")
    ['rewrite', 'the', 'sentence', 'it', 's', '5', 'o', 'clock']
    """
    return _NON_ALNUM.sub(" ", text.lower()).split()


def lcs_length(a: list, b: list) -> int:
    """Length of the longest common subsequence, bit-parallel over `a` (Python ints have no width limit)."""
    if not a or not b:
        return 0
    masks: dict = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        u = v & masks.get(tok, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - bin(v).count("1")


def _fmeasure(lcs: int, n_target: int, n_prediction: int) -> float:
    precision = lcs / n_prediction
    recall = lcs / n_target
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure between two texts, as `RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure`.

    >>> rouge_l("Rank the following universities.", "Rank these universities")
    0.5714285714285715
    """
    ta, tb = rouge_tokens(a), rouge_tokens(b)
    if not ta or not tb:
        return 0.0
    return _fmeasure(lcs_length(ta, tb), len(ta), len(tb))


class RougeFilter:
    """An incremental near-duplicate filter: `check(text)` returns the most similar kept text and its score;
    `add(text)` keeps a text. `offer(text)` does both the Self-Instruct way (keep if max score <= threshold).

        >>> f = RougeFilter(["Rank the following universities."])
        >>> f.offer("Rank the following universities by size.")
        (False, 'Rank the following universities.', 0.8)
        >>> f.offer("Write a haiku about the sea.")[0]
        True
    """

    def __init__(self, texts: Iterable[str] = (), threshold: float = ROUGE_THRESHOLD):
        self.threshold = threshold
        self.texts: list[str] = []
        self._vocab: dict[str, int] = {}
        self._width = 32
        self._tokens = np.full((1024, self._width), -1, dtype=np.int64)
        self._lengths = np.zeros(1024, dtype=np.int64)
        self._long: dict[int, list[int]] = {}  # rows longer than the matrix width keep their full token list
        self._n = 0
        self._lookup = np.zeros(1024, dtype=np.uint64)  # token id -> match mask of the instruction being scored
        for t in texts:
            self.add(t)

    def __len__(self) -> int:
        return self._n

    def _ids(self, text: str, grow: bool) -> list[int]:
        ids = []
        for tok in rouge_tokens(text):
            i = self._vocab.get(tok)
            if i is None:
                if not grow:
                    i = -2  # a token no kept text has: it can match nothing
                else:
                    i = self._vocab[tok] = len(self._vocab)
            ids.append(i)
        return ids

    def add(self, text: str) -> None:
        ids = self._ids(text, grow=True)
        if self._n == len(self._lengths):
            self._tokens = np.concatenate([self._tokens, np.full_like(self._tokens, -1)])
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        if len(ids) > self._width:
            if len(ids) <= 256:
                pad = np.full((len(self._tokens), len(ids) - self._width), -1, dtype=np.int64)
                self._tokens = np.concatenate([self._tokens, pad], axis=1)
                self._width = len(ids)
            else:
                self._long[self._n] = ids
        row = ids[: self._width]
        self._tokens[self._n, : len(row)] = row
        self._lengths[self._n] = len(ids)
        self.texts.append(text)
        self._n += 1

    def scores(self, text: str) -> np.ndarray:
        """ROUGE-L of `text` (as the first, target text) against every kept text; 0 where no overlap is possible."""
        new = self._ids(text, grow=False)
        out = np.zeros(self._n, dtype=np.float64)
        la = len(new)
        if not la or not self._n:
            return out
        lengths = self._lengths[: self._n]
        # F = 2*LCS/(la+lb) <= 2*min(la,lb)/(la+lb): rows whose length cannot reach the threshold are skipped.
        bound = 2 * np.minimum(lengths, la) / (lengths + la)
        cand = np.nonzero((bound > self.threshold) & (lengths > 0))[0]
        if not cand.size:
            return out
        if la > 64:
            lcs = np.array([lcs_length(new, self._row(int(k))) for k in cand], dtype=np.int64)
        else:
            lcs = self._lcs_vectorized(new, cand)
        lb = lengths[cand]
        precision = lcs / lb
        recall = lcs / la
        denom = precision + recall
        with np.errstate(invalid="ignore", divide="ignore"):
            f = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
        out[cand] = f
        return out

    def _row(self, k: int) -> list[int]:
        if k in self._long:
            return self._long[k]
        return self._tokens[k, : self._lengths[k]].tolist()

    def _lcs_vectorized(self, new: list[int], cand: np.ndarray) -> np.ndarray:
        # Bit i of the mask of token t is set where new[i] == t; every kept row is scanned token by token at once.
        vocab = len(self._vocab)
        if len(self._lookup) <= vocab:
            self._lookup = np.zeros(2 * vocab + 2, dtype=np.uint64)
        masks: dict[int, int] = {}
        for i, tok in enumerate(new):
            if tok >= 0:
                masks[tok] = masks.get(tok, 0) | (1 << i)
        for tok, m in masks.items():
            self._lookup[tok] = m
        long_rows = [i for i, k in enumerate(cand) if int(k) in self._long]
        width = self._width if long_rows else int(self._lengths[cand].max(initial=0))
        # One contiguous array per token position; padding (-1) reads the last, always-zero lookup entry.
        columns = np.ascontiguousarray(self._tokens[cand, :width].T)
        full = np.uint64((1 << len(new)) - 1) if len(new) < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        v = np.full(len(cand), full, dtype=np.uint64)
        for col in columns:
            u = v & self._lookup[col]
            v = ((v + u) | (v - u)) & full
        for tok in masks:
            self._lookup[tok] = 0
        lcs = len(new) - np.bitwise_count(v).astype(np.int64)
        for i in long_rows:  # the few rows longer than the matrix: exact, in Python
            lcs[i] = lcs_length(new, self._row(int(cand[i])))
        return lcs

    def check(self, text: str) -> tuple[str | None, float]:
        """The most similar kept text and its ROUGE-L (None, 0.0 when nothing is kept)."""
        s = self.scores(text)
        if not s.size:
            return None, 0.0
        k = int(np.argmax(s))
        return self.texts[k], float(s[k])

    def offer(self, text: str) -> tuple[bool, str | None, float]:
        """Keep `text` if no kept text scores above the threshold; return (kept, most similar, its score)."""
        similar, score = self.check(text)
        keep = score <= self.threshold
        if keep:
            self.add(text)
        return keep, similar, score
