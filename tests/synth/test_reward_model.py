"""The reward-model judge through the real AutoModelForSequenceClassification path: a sequence classifier made
from the default model's weights (SmolLM2-135M-Instruct as LlamaForSequenceClassification, its score head drawn
with a fixed seed) scores conversations; its scores are checked against a direct forward pass, across batch
orders and sizes, under truncation and as a text pair; a recipe with `kind: reward_model` then builds preference
pairs end to end, and the consistency stage reads them."""

from __future__ import annotations

import orjson
import pytest

from alignmix.filters.registry import build_stage
from alignmix.pipeline.ingest import ingest_source
from alignmix.pipeline.recipe import load_recipe
from alignmix.pipeline.store import MixStore
from alignmix.synth.config import PreferencesConfig, RewardModelJudgeConfig
from alignmix.synth.judge import make_judge, win_rate
from alignmix.synth.preferences import build_preferences
from alignmix.synth.reward_model import RewardModelJudge

QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "Bananas are yellow."),
    ("Name a primary color.", "Blue."),
    (
        "Give one tip for sleeping well.",
        "Go to bed at the same time every night and keep the room dark and quiet.",
    ),
    ("Give one tip for sleeping well.", "asdf"),
]


def _conversation(question: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
    ]


def _save_classifier(folder, num_labels: int, seed: int):
    import torch
    from transformers import AutoTokenizer, LlamaForSequenceClassification

    from alignmix.pipeline.models import default_model_dir

    base = default_model_dir()
    model = LlamaForSequenceClassification.from_pretrained(base, num_labels=num_labels, dtype=torch.float32)
    with torch.no_grad():
        model.score.weight.copy_(
            torch.randn(model.score.weight.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
        )
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct with a one-label score head: a small chat reward model."""
    return _save_classifier(tmp_path_factory.mktemp("rm"), num_labels=1, seed=0)


@pytest.fixture(scope="module")
def reference(rm_dir):
    """The saved reward model loaded directly, outside alignmix, and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(rm_dir).eval(), AutoTokenizer.from_pretrained(rm_dir)


def _direct(reference, input_ids: list[int]) -> float:
    import torch

    model, _ = reference
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([input_ids])).logits[0, 0])


def _chat_ids(reference, conversation) -> list[int]:
    _, tok = reference
    return tok(tok.apply_chat_template(conversation, tokenize=False), add_special_tokens=False)["input_ids"]


def _judge(rm_dir, **fields) -> RewardModelJudge:
    return make_judge(RewardModelJudgeConfig(kind="reward_model", model=str(rm_dir), **fields))  # type: ignore[return-value]


def test_config_refuses_pairwise_and_names_the_kinds():
    with pytest.raises(ValueError, match="gives no A/B verdict"):
        PreferencesConfig.model_validate({"judge": {"kind": "reward_model", "model": "m", "pairwise": True}})
    with pytest.raises(ValueError, match="'llm', 'reward_model'"):
        PreferencesConfig.model_validate({"judge": {"kind": "rm", "model": "m"}})
    with pytest.raises(ValueError, match="aspects"):  # an LLM-judge field on a reward model is an error, not ignored
        PreferencesConfig.model_validate({"judge": {"kind": "reward_model", "model": "m", "aspects": ["honesty"]}})
    assert PreferencesConfig.model_validate({"judge": {"model": "default"}}).judge.kind == "llm"


def test_win_rate_counts_ties_as_half():
    assert win_rate([1.0, 1.0, 0.5, 0.0]) == {
        "prompts": 4,
        "wins": 2,
        "ties": 1,
        "losses": 1,
        "win_rate": 0.625,
    }
    assert win_rate([])["win_rate"] is None


@pytest.mark.slow
def test_scores_equal_a_direct_forward_pass(rm_dir, reference):
    judge = _judge(rm_dir, batch_size=2)
    rewards, tokens = judge.rate(QA)
    assert tokens == 0 and judge.describe()["input"] == "chat"  # the tokenizer has a chat template
    for (q, a), reward in zip(QA, rewards):
        ids = _chat_ids(reference, _conversation(q, a))
        assert reward.tokens == len(ids) and reward.truncated is False
        assert reward.rating == pytest.approx(_direct(reference, ids), abs=1e-5)
    scores = [r.rating for r in rewards]
    assert len(set(scores)) == len(scores)  # a seeded head tells these answers apart


@pytest.mark.slow
def test_batch_order_and_size_do_not_change_scores(rm_dir):
    one = [r.rating for r in _judge(rm_dir, batch_size=1).rate(QA)[0]]  # no padding at all
    reversed_batched = [r.rating for r in _judge(rm_dir, batch_size=5).rate(QA[::-1])[0]][::-1]  # one padded batch
    lengths = {len(a) for _, a in QA}
    assert len(lengths) > 1  # the batch really is padded
    assert reversed_batched == pytest.approx(one, abs=1e-5)


@pytest.mark.slow
def test_truncation_at_max_length_is_recorded(rm_dir, reference):
    rewards, _ = _judge(rm_dir, max_length=24).rate(QA)
    for (q, a), reward in zip(QA, rewards):
        ids = _chat_ids(reference, _conversation(q, a))
        assert reward.tokens == len(ids) and reward.truncated == (len(ids) > 24)
        assert reward.rating == pytest.approx(_direct(reference, ids[:24]), abs=1e-5)
    assert any(r.truncated for r in rewards) and _judge(rm_dir, max_length=24).describe()["max_length"] == 24


@pytest.mark.slow
def test_pair_input_scores_the_question_answer_text_pair(rm_dir, reference):
    _, tok = reference
    rewards, _ = _judge(rm_dir, input="pair").rate(QA[:3])
    for (q, a), reward in zip(QA, rewards):
        ids = tok(q, a)["input_ids"]  # what a cross-encoder RM (OpenAssistant's DeBERTa) is given
        assert reward.tokens == len(ids) and reward.rating == pytest.approx(_direct(reference, ids), abs=1e-5)


@pytest.mark.slow
def test_multi_head_output_reads_the_chosen_column(tmp_path, reference):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = _save_classifier(tmp_path / "rm3", num_labels=3, seed=1)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ids = _chat_ids(reference, _conversation(*QA[0]))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    assert _judge(folder, head=2).rate(QA[:1])[0][0].rating == pytest.approx(float(logits[2]), abs=1e-5)
    with pytest.raises(ValueError, match="judge.head = 3, but 'logits' has 3 column"):
        _judge(folder, head=3).rate(QA[:1])
    with pytest.raises(ValueError, match="returned no 'reward'"):
        _judge(folder, output="reward").rate(QA[:1])


@pytest.mark.slow
def test_outcomes_compare_the_two_scores(rm_dir):
    judge = _judge(rm_dir)
    scores = [r.rating for r in judge.rate(QA[:2])[0]]
    items = [
        (QA[0][0], QA[0][1], QA[1][1]),
        (QA[0][0], QA[1][1], QA[0][1]),
        (QA[0][0], QA[0][1], QA[0][1]),
    ]
    first_wins = 1.0 if scores[0] > scores[1] else 0.0
    assert judge.outcomes(items) == [first_wins, 1.0 - first_wins, 0.5]


@pytest.mark.slow
def test_recipe_with_a_reward_model_builds_pairs_that_curation_reads(rm_dir, reference, tmp_path):
    """The recipe's prompt source is ingested, answered by the default model, rated by the reward model and
    binarized (as the flow's build-preferences task does); the consistency stage then runs on the pairs."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(
            orjson.dumps({"prompt": q}).decode() + "\n"
            for q in [
                "Name a large river in Europe.",
                "What is the capital of Japan?",
                "Say hello.",
            ]
        )
    )
    recipe_file = tmp_path / "rm.yaml"
    recipe_file.write_text(f"""
name: rm-prefs
sources: [{{name: prompts, path: prompts.jsonl}}]
preferences:
  name: rm_prefs
  prompts: prompts
  seed: 5
  responders: [{{temperature: 0.7, max_new_tokens: 12, n: 2}}, {{temperature: 1.3, max_new_tokens: 12, n: 2}}]
  judge: {{kind: reward_model, model: {rm_dir}, batch_size: 3}}
  binarize: {{rejected: lowest}}
curation:
  - {{stage: consistency, drop_ties: true}}
""")
    recipe = load_recipe(recipe_file)
    ingest_source(recipe.sources[0], tmp_path / "work" / "prompts")
    spec = {k: v for k, v in recipe.preferences.items() if k != "prompts"}
    stats = build_preferences(MixStore(tmp_path / "work" / "prompts").read(), spec, tmp_path / "prefs")
    judged, binarized = stats["judge"], stats["binarize"]
    assert judged["rows_kept"] == judged["counters"]["judged"] == stats["responses"]["rows_kept"]
    assert judged["counters"]["unparseable"] == judged["counters"]["truncated"] == 0
    assert judged["judge"]["backend"] == "reward_model" and judged["judge"]["input"] == "chat"
    assert binarized["prompts"] == 3 and "pairwise_judged" not in binarized

    pairs = MixStore(tmp_path / "prefs").read()
    assert pairs.height == binarized["pairs"] == binarized["rows_kept"] >= 1
    for row in pairs.iter_rows(named=True):
        meta = orjson.loads(row["meta"])
        ratings = [s["rating"] for s in meta["all_scores"]]
        assert row["score_chosen"] == max(ratings) == ratings[meta["chosen_index"]]  # the argmax is chosen
        assert row["score_rejected"] == min(ratings) == ratings[meta["rejected_index"]]  # rejected: lowest
        assert row["score_chosen"] == pytest.approx(_direct(reference, _chat_ids(reference, row["chosen"])), abs=1e-5)
        assert meta["judge"]["backend"] == "reward_model" and meta["chosen"]["ratings"] == {
            "reward": row["score_chosen"]
        }
        assert "pairwise" not in meta
    margins = binarized["distributions"]["score_margin"]
    assert margins["n"] == pairs.height and sum(margins["counts"]) == pairs.height  # spans the data, not 0-4

    stage = build_stage(recipe.curation[0])
    assert stage.score(pairs)["position_consistent"].null_count() == pairs.height  # no verdicts: nothing to flip
    result = stage.run(pairs)
    assert result.stats.rows_in == pairs.height and "position_inconsistent" not in result.stats.dropped
