"""Producer to consumer: responses -> the real `Judge` (ratings and `compare`) -> binarization -> the consistency
filter, with a scripted backend in place of the model, so every verdict and finish reason is known in advance.

The script: each prompt gets a "good" answer (temperature 0.3) and a "bad" one (temperature 1.0); the judge rates
good 5 and bad 2, so good is chosen. Pairwise, the judge prefers the good answer in either position, except for
the prompt about "position" where it always answers "A" (position bias: the verdict flips with the order). For
the prompt about "truncation" the good answer stopped at the token limit.
"""

from __future__ import annotations

import re

import orjson
import polars as pl
import pytest

from alignmix.filters.consistency import PreferenceConsistency
from alignmix.pipeline.store import MixStore
from alignmix.synth import build_preferences
from alignmix.synth.backends.base import Backend, GenerationRequest, GenerationResult
from tests.stage_contract import assert_stage_contract

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PROMPTS = ["Explain position bias.", "Explain truncation.", "Explain consistency."]


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self):
        super().__init__("scripted-model")
        self.requests: list[GenerationRequest] = []

    def chat_template(self) -> str:
        return CHATML

    def special_tokens(self) -> dict[str, str]:
        return {"bos_token": "", "eos_token": "<|im_end|>"}

    def _generate(self, requests: list[GenerationRequest], progress) -> list[GenerationResult]:
        self.requests += requests
        out = [self._answer(r) for r in requests]
        if progress:
            progress(len(out), sum(o.completion_tokens for o in out))
        return out

    def _answer(self, req: GenerationRequest) -> GenerationResult:
        if req.messages is not None:  # a responder
            question = req.messages[-1]["content"]
            good = req.params.temperature < 0.5
            text = f"A {'good' if good else 'bad'} answer to: {question}"
            finish = "length" if good and "truncation" in question else "stop"
            return GenerationResult(text, finish, 10, 8)
        prompt = req.prompt or ""
        if prompt.endswith("Better answer:"):
            first = re.search(r"Answer A:\n(.*?)\n\nAnswer B:", prompt, re.S).group(1)
            letter = "A" if "position" in prompt or "good" in first else "B"
            return GenerationResult(f" {letter}", "stop", 50, 1)
        assert prompt.endswith("Rating:"), prompt
        rating = 5 if "A good answer" in prompt else 2
        return GenerationResult(f" {rating}\nRationale: scripted.", "stop", 50, 4)


@pytest.fixture()
def scripted(monkeypatch):
    backend = ScriptedBackend()
    for module in ("alignmix.synth.judge", "alignmix.synth.responses"):
        monkeypatch.setattr(f"{module}.get_backend", lambda spec, **kw: backend)
    return backend


SPEC = {
    "name": "scripted_prefs",
    "seed": 3,
    "responders": [{"temperature": 0.3, "max_new_tokens": 8}, {"temperature": 1.0, "max_new_tokens": 8}],
    "judge": {"rating": "parsed", "aspects": ["helpfulness"], "pairwise": True},
    "binarize": {"rejected": "lowest"},
}


def test_judge_binarize_consistency_drops_flipped_and_truncated_pairs(scripted, tmp_path):
    stats = build_preferences(PROMPTS, SPEC, tmp_path / "prefs")
    b = stats["binarize"]
    assert b["pairs"] == 3 and b["pairwise_judged"] == 3
    assert (b["pairwise_consistent"], b["pairwise_inconsistent"], b["pairwise_unparseable"]) == (2, 1, 0)
    pairs = MixStore(tmp_path / "prefs").read()
    by_prompt = {row["prompt"]: orjson.loads(row["meta"]) for row in pairs.iter_rows(named=True)}

    # What binarization and the judge wrote: both sides' finish reasons and the shared pairwise record.
    trunc = by_prompt["Explain truncation."]
    assert trunc["finish_reason"] == {"chosen": "length", "rejected": "stop"}
    assert trunc["chosen"]["finish_reason"] == "length" and trunc["rejected"]["finish_reason"] == "stop"
    flip = by_prompt["Explain position bias."]["pairwise"]
    assert [(v["first"], v["answer"], v["winner"]) for v in flip["verdicts"]] == [
        ("chosen", "A", "chosen"),
        ("rejected", "A", "rejected"),
    ]
    assert flip["consistent"] is False and flip["agrees"] is None
    ok = by_prompt["Explain consistency."]["pairwise"]
    assert ok["consistent"] is True and ok["agrees"] is True

    kept, rejected, cstats = assert_stage_contract(PreferenceConsistency(), pairs)
    reasons = {r["prompt"]: (r["drop_reason"], r["drop_detail"]) for r in rejected.iter_rows(named=True)}
    assert reasons == {
        "Explain position bias.": ("position_inconsistent", "chosen first: chosen; rejected first: rejected"),
        "Explain truncation.": ("truncated_response", "chosen: finish_reason=length"),
    }
    assert kept["prompt"].to_list() == ["Explain consistency."]
    assert kept["position_consistent"].to_list() == [True]
    assert cstats.dropped == {"position_inconsistent": 1, "truncated_response": 1}


def test_unreadable_pairwise_answer_is_no_verdict(scripted, monkeypatch, tmp_path):
    original = scripted._answer

    def mumble(req):
        res = original(req)
        if (req.prompt or "").endswith("Better answer:") and "consistency" in req.prompt:
            return GenerationResult(" I cannot say", "stop", 50, 3)
        return res

    monkeypatch.setattr(scripted, "_answer", mumble)
    stats = build_preferences(PROMPTS, SPEC, tmp_path / "prefs")
    assert stats["binarize"]["pairwise_unparseable"] == 1
    pairs = MixStore(tmp_path / "prefs").read()
    kept, rejected, _ = assert_stage_contract(PreferenceConsistency({"check_truncated": False}), pairs)
    assert sorted(rejected["drop_reason"]) == ["position_inconsistent"]
    row = kept.filter(pl.col("prompt") == "Explain consistency.")
    assert row["position_consistent"].to_list() == [None]
    assert orjson.loads(row["meta"][0])["pairwise"]["verdicts"][0]["winner"] is None
