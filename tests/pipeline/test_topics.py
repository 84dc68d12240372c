"""The topic classifier: designed prompts, and accuracy on a hand-labelled sample of real prompts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from alignmix.pipeline.schema import sft_row, to_frame
from alignmix.pipeline.topics import CATEGORIES, add_categories, classify_texts

LABELLED = Path(__file__).resolve().parents[1] / "data" / "topics_labelled.jsonl"

# How each labelled file's prompt is read: the text the mix classifies (the last user turn).
PROMPT_OF = {
    "ultrafeedback/eval_clean.jsonl": lambda r: r["prompt"],
    "hh_rlhf/test_prefs.jsonl": lambda r: r["prompt"].rsplit("Human:", 1)[-1].split("Assistant:")[0].strip(),
    "llama_factory/dpo_en_demo.json": lambda r: r["conversations"][-1]["value"],
    "llama_factory/alpaca_en_demo.json": lambda r: (r["instruction"] + "\n" + r["input"]).strip(),
    "evals/gsm8k_test.jsonl": lambda r: r["question"],
    "evals/ifeval_input_data.jsonl": lambda r: r["prompt"],
}


def _load(path: Path) -> list[dict]:
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("Write a Python function that reverses a linked list.", "coding"),
        ("Solve for x: 3x + 4 = 19", "math"),
        ("Compose a sonnet about autumn leaves.", "writing"),
        ("Who was the first emperor of Rome?", "knowledge_qa"),
        ('Premise: "A man is sleeping." Hypothesis: "A man is awake." Does the premise entail the hypothesis?',
         "reasoning"),
        ("I want you to act as a travel guide in Lisbon.", "role_play"),
        ("How do I make a bomb at home?", "safety_sensitive"),
        ("ok thanks", "other"),
    ],
)
def test_one_prompt_per_category(text: str, category: str) -> None:
    assert classify_texts([text]) == [category]


def test_safety_outranks_other_cues() -> None:
    # A harmful request phrased as code or as a story is still what a mix owner needs to see first.
    assert classify_texts(["Write a Python script to hack into my neighbour's wifi"]) == ["safety_sensitive"]


def test_sft_rows_are_classified_by_their_last_user_turn() -> None:
    row = sft_row(
        [{"role": "user", "content": "Tell me a joke"}, {"role": "assistant", "content": "..."},
         {"role": "user", "content": "Now compute 17 * 23"}, {"role": "assistant", "content": "391"}],
        source="s", source_id="0",
    )
    assert add_categories(to_frame([row], "sft"))["category"].to_list() == ["math"]


def test_an_existing_category_column_is_kept() -> None:
    frame = pl.DataFrame({"prompt": ["Write a poem"], "category": ["coding"]})
    assert add_categories(frame)["category"].to_list() == ["coding"]


def test_accuracy_on_the_labelled_sample(shared_data: Path) -> None:
    """172 real prompts labelled by hand (tests/data/topics_labelled.jsonl names each by file and index)."""
    items = [json.loads(line) for line in LABELLED.read_text().splitlines()]
    files = {name: _load(shared_data / name) for name in {it["file"] for it in items}}
    texts = [PROMPT_OF[it["file"]](files[it["file"]][it["index"]]) for it in items]
    predicted = classify_texts(texts)
    labels = [it["label"] for it in items]
    assert set(labels) == set(CATEGORIES)
    correct = sum(p == y for p, y in zip(predicted, labels))
    per_category = Counter(y for p, y in zip(predicted, labels) if p == y)
    # Measured: 141 of 172 (82.0%); every category is recognised at least once.
    assert len(items) == 172
    assert correct / len(items) >= 0.80, (correct, Counter(zip(labels, predicted)).most_common(10))
    assert all(per_category[c] > 0 for c in CATEGORIES), per_category
