"""ROUGE-L against the reference numbers (rouge_score's RougeScorer(["rougeL"], use_stemmer=False), as
computed by the Alpaca/Self-Instruct code), and the vectorized filter against a plain DP implementation."""

from __future__ import annotations

import random

import orjson
import pytest

from alignmix.synth import RougeFilter, rouge_l
from alignmix.synth.rouge import lcs_length, rouge_tokens


def _dp_lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
    return table[-1][-1]


@pytest.fixture(scope="module")
def reference(shared_data):
    return orjson.loads((shared_data / "self_instruct" / "alpaca_regen_minpeter.json").read_bytes())


def test_rouge_l_reproduces_the_reference_scores(reference):
    pairs = [(r["instruction"], other, score) for r in reference for other, score in r["most_similar_instructions"].items()]
    assert len(pairs) == 730
    worst = max(abs(rouge_l(new, other) - score) for new, other, score in pairs)
    assert worst <= 1e-6


def test_filter_scores_reproduce_the_reference(reference):
    for r in reference:
        others = list(r["most_similar_instructions"])
        scores = RougeFilter(others, threshold=0.0).scores(r["instruction"])
        expected = list(r["most_similar_instructions"].values())
        for got, want in zip(scores.tolist(), expected):
            # the filter skips only pairs whose length bound is below its threshold (0 here: none)
            assert abs(got - want) <= 1e-6


def test_tokenization_matches_rouge_score_rules():
    assert rouge_tokens("Don't STOP—believin'! 2x") == ["don", "t", "stop", "believin", "2x"]
    assert rouge_tokens("Ünïcode café") == ["n", "code", "caf"]
    assert rouge_l("", "anything") == 0.0
    assert rouge_l("!!!", "???") == 0.0


def test_vectorized_lcs_matches_dynamic_programming_for_all_lengths():
    rng = random.Random(7)
    vocab = [f"w{i}" for i in range(12)]
    texts = [" ".join(rng.choices(vocab, k=rng.choice([1, 3, 8, 30, 63, 64, 65, 100, 300]))) for _ in range(60)]
    f = RougeFilter(texts, threshold=0.0)
    for probe in texts[:25]:
        scores = f.scores(probe)
        ta = rouge_tokens(probe)
        for k, other in enumerate(texts):
            tb = rouge_tokens(other)
            lcs = _dp_lcs(ta, tb)
            assert lcs_length(ta, tb) == lcs
            p, r = lcs / len(tb), lcs / len(ta)
            assert scores[k] == pytest.approx(2 * p * r / (p + r) if lcs else 0.0, abs=1e-12)


def test_offer_keeps_at_the_threshold_and_drops_above():
    f = RougeFilter(["a b c d e f g h i j"], threshold=0.7)
    # 7 shared tokens of 10 and 10: F = 0.7 exactly, which the paper keeps (it drops > 0.7)
    kept, similar, score = f.offer("a b c d e f g x y z")
    assert (kept, round(score, 12)) == (True, 0.7)
    kept, similar, score = f.offer("a b c d e f g h q r")
    assert (kept, similar, score) == (False, "a b c d e f g h i j", pytest.approx(0.8))
    assert len(f) == 2
