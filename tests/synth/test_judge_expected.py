"""Probability-weighted (G-Eval) judge ratings: the arithmetic on handmade distributions, then the real default
model through the transformers backend (marked slow), and the clear errors where it cannot work."""

from __future__ import annotations

import orjson
import pytest

from alignmix.pipeline.store import MixStore
from alignmix.synth import build_preferences
from alignmix.synth.backends import get_backend
from alignmix.synth.backends.base import Backend
from alignmix.synth.backends.openai import OpenAIBackend, OpenAIBackendError
from alignmix.synth.config import JudgeConfig
from alignmix.synth.judge import DIGITS, Judge, Judgement, digit_mass, expected_rating, rating_candidates

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "Bananas are yellow and grow on trees."),
    ("Name a primary color.", "Blue."),
    ("Name a primary color.", ""),
    ("Give one tip for sleeping well.", "Go to bed at the same time every night and keep the room dark."),
    ("Give one tip for sleeping well.", "asdf qwer zxcv"),
]


def test_expected_rating_renormalizes_over_the_five_digits():
    rating, top, dist, mass = expected_rating({"1": 0.02, "2": 0.0, "3": 0.06, "4": 0.08, "5": 0.04})
    assert mass == pytest.approx(0.2)
    assert dist == pytest.approx({"1": 0.1, "2": 0.0, "3": 0.3, "4": 0.4, "5": 0.2})
    assert rating == pytest.approx(0.1 * 1 + 0.3 * 3 + 0.4 * 4 + 0.2 * 5, abs=1e-6) == pytest.approx(3.6)
    assert top == 4


def test_expected_rating_is_null_when_the_digits_get_negligible_mass():
    assert expected_rating({"1": 0.0004, "5": 0.0005}) == (None, None, dict.fromkeys(DIGITS, 0.0), pytest.approx(0.0009))
    # The same shape with enough mass rates: 1 and 5 in a 4:5 ratio.
    assert expected_rating({"1": 0.004, "5": 0.005})[:2] == (round((4 * 1 + 5 * 5) / 9, 6), 5)


def test_digit_mass_sums_every_spelling_of_a_digit():
    after_prefill = {"1": 0.01, " 1": 0.02, "4": 0.03, " 4": 0.0, " ": 0.5}
    after_space = {"1": 0.2, "4": 0.6, "5": 0.2}
    mass = digit_mass(after_prefill, after_space)
    assert mass == pytest.approx({"1": 0.01 + 0.02 + 0.5 * 0.2, "2": 0.0, "3": 0.0, "4": 0.03 + 0.5 * 0.6, "5": 0.5 * 0.2})
    assert rating_candidates() == ["1", "2", "3", "4", "5", " 1", " 2", " 3", " 4", " 5", " "]


def test_parsed_judgement_meta_keeps_its_keys():
    j = Judgement({"helpfulness": 4}, {"helpfulness": "ok"}, {"helpfulness": "Rating: 4\nRationale: ok"})
    assert j.to_dict() == {"ratings": {"helpfulness": 4}, "rationales": {"helpfulness": "ok"}, "rating": 4.0,
                           "raw": {"helpfulness": "Rating: 4\nRationale: ok"}, "parsed": True,
                           "rating_mode": "parsed"}  # fmt: skip


def test_expected_needs_a_chat_template_for_the_prefill():
    backend = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1")  # no tokenizer: no template, nothing is sent
    with pytest.raises(ValueError, match="rating: parsed"):
        Judge(JudgeConfig(rating="expected"), backend)
    assert Judge(JudgeConfig(), backend).prefill is False


@pytest.fixture(scope="module")
def backend():
    b = get_backend({"backend": "transformers", "model": "default", "batch_size": 16})
    b.load()
    return b


@pytest.mark.slow
def test_next_token_probs_batched_equals_one_at_a_time(backend):
    judge = Judge(JudgeConfig(rating="expected"), backend)
    prompts = [judge._prefilled(f"Rate this answer to {i!r}: {r!r}", s) for (i, r), s in zip(PAIRS, ["Rating:", "Rating: "] * 3)]
    cands = rating_candidates() + ["not one token"]
    batched = backend.next_token_probs(prompts, cands)
    assert len(batched) == len(prompts)
    for p, got in zip(prompts, batched):
        assert set(got) == set(cands) and got["not one token"] == 0.0
        assert all(0.0 <= v <= 1.0 for v in got.values())
        assert sum(got.values()) <= 1.0 + 1e-6  # distinct tokens of one softmax
        alone = backend.next_token_probs([p], cands)[0]
        assert all(abs(alone[c] - got[c]) < 1e-4 for c in cands)
    # After "Rating: " the digits hold most of the mass; after "Rating:" SmolLM2 writes the space first, which is
    # why digit_mass follows the space: the digits right after "Rating:" hold a small share of the space's.
    assert sum(batched[1][d] for d in DIGITS) > 0.5
    assert batched[0][" "] > 10 * sum(batched[0][d] + batched[0][" " + d] for d in DIGITS)


@pytest.mark.slow
def test_a_prompt_and_its_spaced_variant_share_one_forward_pass(backend):
    """The judge asks after `p` and after `p + " "`: one pass over `p + " "` gives both distributions."""
    judge = Judge(JudgeConfig(rating="expected"), backend)
    prompts = [judge._prefilled(f"Rate this answer to {i!r}: {r!r}", "Rating:") + s for i, r in PAIRS for s in ("", " ")]
    rows = []
    hook = backend.lm.register_forward_hook(lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]),
                                            with_kwargs=True)  # fmt: skip
    try:
        together = backend.next_token_probs(prompts, rating_candidates())
    finally:
        hook.remove()
    assert rows == [len(PAIRS)]  # one row per item, not two
    for p, got in zip(prompts, together):
        alone = backend.next_token_probs([p], rating_candidates())[0]
        assert all(abs(alone[c] - got[c]) < 1e-4 for c in got)


@pytest.mark.slow
def test_generate_and_probe_reads_the_ratings_off_the_generation(backend, monkeypatch):
    """The transformers backend's one-pass route gives the texts and distributions of the two separate calls
    (the base class's route), and needs a forward pass over `p + " "` only where the first token is not the space."""
    judge = Judge(JudgeConfig(rating="expected", max_new_tokens=8), backend)
    reqs = [judge._request(f"Rate this answer to {i!r}: {r!r}", "Rating:", 8, 0) for i, r in PAIRS]
    reference = Backend.generate_and_probe(backend, reqs, rating_candidates(), " ")
    asked = []
    forward = backend._next_token_probs
    monkeypatch.setattr(backend, "_next_token_probs", lambda prompts, c: asked.extend(prompts) or forward(prompts, c))
    results, probs = backend.generate_and_probe(reqs, rating_candidates(), " ")
    assert [r.text for r in results] == [r.text for r in reference[0]]
    for ours, theirs in zip(probs, reference[1]):
        for a, b in zip(ours, theirs):
            assert set(a) == set(b) and all(abs(a[c] - b[c]) < 1e-4 for c in a)
    assert set(asked) <= {r.prompt + " " for r in reqs} and len(asked) < len(reqs)


@pytest.mark.slow
def test_expected_ratings_are_graded_and_match_their_distribution(backend):
    judge = Judge(JudgeConfig(rating="expected", aspects=["helpfulness"], max_new_tokens=8), backend)
    judgements, tokens = judge.rate(PAIRS)
    assert len(judgements) == 6 and tokens > 0
    for j in judgements:
        d = j.to_dict()
        assert d["rating_mode"] == "expected" and d["parsed"]
        dist, r = d["distributions"]["helpfulness"], d["ratings"]["helpfulness"]
        assert 1.0 <= r <= 5.0 and d["digit_mass"]["helpfulness"] >= 1e-3
        assert abs(r - sum(int(k) * p for k, p in dist.items())) <= 1e-6
        assert sum(dist.values()) == pytest.approx(1.0)
        assert d["top_digits"]["helpfulness"] == int(max(dist, key=dist.get))
        assert d["raw"]["helpfulness"].startswith("Rating:")
    assert len({j.rating for j in judgements}) > 1
    # Reproducible: the same items rate the same in another batch (padding moves only the float noise).
    assert [j.rating for j in judge.rate(PAIRS[:2])[0]] == pytest.approx([j.rating for j in judgements[:2]], abs=1e-4)


@pytest.mark.slow
def test_preferences_with_expected_ratings_give_float_scored_pairs(backend, tmp_path):
    spec = {
        "responders": [{"temperature": 0.7, "max_new_tokens": 12}, {"temperature": 1.3, "max_new_tokens": 12}],
        "judge": {"rating": "expected", "aspects": ["helpfulness"], "max_new_tokens": 4},
        "binarize": {"rejected": "lowest"},
    }
    stats = build_preferences(["Name a large river in Europe.", "What is 2 + 2?"], spec, tmp_path / "prefs")
    b = stats["binarize"]
    assert stats["judge"]["counters"]["unparseable"] == 0 and b["unrated_responses"] == 0
    assert b["pairs"] == b["rows_kept"] == 2 - sum(b["dropped"].values())
    assert b["pairs"] >= 1
    for row in MixStore(tmp_path / "prefs").read().iter_rows(named=True):
        meta = orjson.loads(row["meta"])
        assert row["score_chosen"] > row["score_rejected"]
        assert row["score_chosen"] == meta["chosen"]["rating"] == meta["chosen"]["ratings"]["helpfulness"]


@pytest.mark.slow
def test_openai_server_without_logprobs_says_to_use_parsed(backend):
    from tests.synth.openai_server import OpenAICompatibleServer

    with OpenAICompatibleServer(backend) as server:
        client = OpenAIBackend("default", base_url=server.base_url, max_retries=0)
        with pytest.raises(OpenAIBackendError, match="rating: parsed"):
            client.next_token_probs(["Rating:"], rating_candidates())


@pytest.mark.slow
def test_openai_backend_reads_top_logprobs_from_the_completions_answer(backend):
    """A server answering /v1/completions the way `vllm serve` does (choices[0].logprobs.top_logprobs[0] maps
    token text -> logprob), backed by the real model's next-token probabilities."""
    import json
    import math
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    cands = rating_candidates()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert body["max_tokens"] == 1 and body["logprobs"] == 20
            probs = backend.next_token_probs([body["prompt"]], cands)[0]
            top = {t: math.log(p) for t, p in probs.items() if p > 0}
            data = json.dumps({"choices": [{"text": "", "logprobs": {"top_logprobs": [top]}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        client = OpenAIBackend("default", base_url=f"http://127.0.0.1:{httpd.server_address[1]}/v1", max_retries=0)
        prompts = ["<|im_start|>user\nRate: Paris is in France.<|im_end|>\n<|im_start|>assistant\nRating:", "Rating: "]
        got = client.next_token_probs(prompts, cands)
    finally:
        httpd.shutdown()
        httpd.server_close()
    want = backend.next_token_probs(prompts, cands)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)  # the server rates one prompt at a time, this a padded batch
