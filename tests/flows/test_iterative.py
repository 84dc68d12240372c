"""Iterative DPO: the recipe section and its errors, the prompt split, what each round's steps are given, the
win rate, continuing DPO from an adapter with the start model as reference, sampling through an adapter, and the
offline demo end to end (`alignmix build recipes/iterative-demo.yaml`, then a rebuild that skips its rounds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import polars as pl
import pytest
import yaml

from alignmix.flows.recipes import RECIPES_DIR, resolve_recipe
from alignmix.pipeline.recipe import RecipeError
from alignmix.pipeline.rounds import (
    IterativeSpec,
    RoundPlan,
    pair_figures,
    split_prompts,
)
from alignmix.pipeline.store import MixStore, sha256_file
from alignmix.synth.config import PreferencesConfig
from alignmix.synth.responses import load_prompts

BIN = Path(sys.executable).parent
DEMO = RECIPES_DIR / "iterative-demo.yaml"


def demo_recipe() -> dict:
    return yaml.safe_load(DEMO.read_text())


def with_iterative(**changes) -> str:
    recipe = demo_recipe()
    recipe["sources"][0]["path"] = str(RECIPES_DIR / recipe["sources"][0]["path"])
    recipe["iterative"] = {**recipe["iterative"], **changes}
    return yaml.safe_dump(recipe)


@pytest.mark.parametrize(("change", "expected"), [
    ({"rounds": 0}, "iterative.rounds = 0: Input should be greater than or equal to 1 (fix: use a larger value)"),
    ({"pairing": "best"}, "iterative.pairing = 'best': Input should be 'best_worst' or 'binarize' (fix: use one of"),
    ({"samples_per_prompt": 1}, "iterative.samples_per_prompt = 1: Input should be greater than or equal to 2"),
    ({"dpo": {"model": "x"}}, "dpo.model: set per round by the flow; give the start policy as `iterative.model`"),
    ({"prompts": ["nope"]}, "iterative.prompts names ['nope'], which is no source or generator of this recipe"),
    ({"sampling": {"temprature": 1.0}}, ("iterative.sampling: the recipe is not valid:\n  temprature = 1.0: Extra "
                                         "inputs are not permitted (fix: remove it")),
    ({"dpo": {"beta": -1}}, "iterative.dpo: the recipe is not valid:\n  beta = -1: Input should be greater than 0"),
    ({"heldout": {"prompt": 3}}, "iterative.heldout.prompt = 3: Extra inputs are not permitted (fix: remove it"),
])
def test_a_bad_section_names_the_field_and_the_fix(change, expected):
    with pytest.raises(RecipeError) as err:
        resolve_recipe(with_iterative(**change))
    assert expected in str(err.value)


def test_the_demo_recipe_resolves_and_its_judge_is_the_recipe_judge():
    r = resolve_recipe(str(DEMO))
    plan = RoundPlan(r.iterative, "out/x", r.seed, r.preferences, r.curation)
    assert plan.judge == {"rating": "expected", "aspects": ["helpfulness"], "max_new_tokens": 4, "batch_size": 16}
    # Without `iterative.judge`, the rounds use `preferences.judge`: the recipe's judge, whatever its kind.
    spec = IterativeSpec(rounds=2)
    judge = {"kind": "llm", "aspects": ["honesty"]}
    assert RoundPlan(spec, "out/x", 1, {"judge": judge}).judge == judge


def prompt_frame(n: int) -> pl.DataFrame:
    return load_prompts([f"Question number {i}?" for i in range(n)])


def test_prompts_split_into_held_out_and_disjoint_rounds_whatever_their_order():
    spec = IterativeSpec(rounds=3, prompts_per_round=4, heldout={"prompts": 5})
    held, rounds = split_prompts(prompt_frame(20), spec, seed=3)
    assert held.height == 5 and [r.height for r in rounds] == [4, 4, 4]
    ids = [set(held["prompt_id"])] + [set(r["prompt_id"]) for r in rounds]
    assert sum(len(s) for s in ids) == len(set().union(*ids)) == 17  # disjoint; 3 prompts left unused
    held2, rounds2 = split_prompts(prompt_frame(20).reverse(), spec, seed=3)
    assert held2["prompt_id"].to_list() == held["prompt_id"].to_list()
    assert [r["prompt_id"].to_list() for r in rounds2] == [r["prompt_id"].to_list() for r in rounds]
    assert split_prompts(prompt_frame(20), spec, seed=4)[0]["prompt_id"].to_list() != held["prompt_id"].to_list()
    # Default: the pool after the held-out prompts, split evenly over the rounds.
    _, even = split_prompts(prompt_frame(20), IterativeSpec(rounds=3, heldout={"prompts": 5}), seed=3)
    assert [r.height for r in even] == [5, 5, 5]
    with pytest.raises(ValueError, match=r"20 prompts, 5 held out, leave 15 for 3 rounds of 6; fix: add prompts"):
        split_prompts(prompt_frame(20), IterativeSpec(rounds=3, prompts_per_round=6, heldout={"prompts": 5}), 3)


def test_each_round_samples_from_the_last_adapter_and_trains_from_it_against_the_start_model(tmp_path):
    spec = IterativeSpec(rounds=3, samples_per_prompt=6, pairing="best_worst", model="default",
                         sampling={"temperature": 0.9, "backend_options": {"dtype": "float32"}}, dpo={"beta": 0.2})
    plan = RoundPlan(spec, tmp_path / "mix", seed=5, preferences=None)
    first, third = plan.samples_spec(1), plan.samples_spec(3)
    assert first["responders"] == [{"temperature": 0.9, "model": "default", "n": 6, "label": "policy-0",
                                    "backend_options": {"dtype": "float32"}}]
    assert third["responders"][0]["backend_options"] == {"dtype": "float32",
                                                         "adapter": str(tmp_path / "mix/rounds/round-2/adapter")}
    assert first["binarize"] == {"rejected": "lowest"} and first["seed"] != third["seed"]
    assert PreferencesConfig.model_validate(third).responders[0].n == 6
    assert plan.dpo_spec(1) == {"beta": 0.2, "model": "default", "init_adapter": None}
    assert plan.dpo_spec(3)["init_adapter"] == str(tmp_path / "mix/rounds/round-2/adapter")
    answers = plan.answers_spec(2)
    labels = [(r["label"], r["backend_options"].get("adapter"), r["n"], r["temperature"]) for r in answers["responders"]]
    assert labels == [("policy-1", str(tmp_path / "mix/rounds/round-1/adapter"), 1, 0.0),
                      ("policy-2", str(tmp_path / "mix/rounds/round-2/adapter"), 1, 0.0)]
    assert answers["seed"] == plan.answers_spec(3)["seed"]  # both sides of every round: the same seeds
    assert RoundPlan(spec.model_copy(update={"pairing": "binarize"}), tmp_path, 5).samples_spec(1)["binarize"] == {
        "rejected": "random"}
    # A round's fingerprint follows the one before it: a changed round 1 reruns every later round.
    assert plan.fingerprint(2, ["a"], "fp1") != plan.fingerprint(2, ["a"], "fp1-changed")


def test_paired_answers_take_a_duplicate_from_the_other_side_and_leave_an_empty_one_missing():
    """What the responses stage writes for two one-answer responders: a duplicate second answer is rejected (it
    is the first one's text, a tie for the judge), an empty one is rejected (no pair)."""
    from alignmix.synth.winrate import paired_answers

    def meta(pid: str, index: int) -> str:
        return orjson.dumps({"prompt_id": pid, "response_index": index}).decode()

    def turns(text: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"q-{text}"}, {"role": "assistant", "content": text}]

    kept = pl.DataFrame({"messages": [turns("a0"), turns("a1"), turns("b0"), turns("c1")],
                         "meta": [meta("a", 0), meta("a", 1), meta("b", 0), meta("c", 1)]})
    rejected = pl.DataFrame({"meta": [meta("b", 1), meta("c", 0)], "drop_reason": ["duplicate_response", "empty_response"]})
    answers = paired_answers(kept, rejected)
    assert answers == {"a": {"prompt": "q-a0", 0: "a0", 1: "a1"}, "b": {"prompt": "q-b0", 0: "b0", 1: "b0"},
                       "c": {"prompt": "q-c1", 1: "c1"}}


def test_pair_figures_on_pairs_that_binarize_wrote(tmp_path):
    """Producer and consumer: UltraFeedback-style rated responses binarized best-vs-worst, then measured."""
    from alignmix.pipeline.schema import sft_row, to_frame
    from alignmix.synth.binarize import (
        Binarizer,
        BinarizeStageConfig,
        prompt_groups,
        to_preference_rows,
    )

    rows = []
    for pid, ratings in (("p1", [2.0, 4.5, 3.0]), ("p2", [3.0, 3.0, 3.0])):
        for i, rating in enumerate(ratings):
            messages = [{"role": "user", "content": f"prompt {pid}"}, {"role": "assistant", "content": "a" * (i + 1)}]
            meta = {"prompt_id": pid, "response_index": i,
                    "judge": {"rating": rating, "ratings": {"helpfulness": rating}, "rationales": {}, "raw": {}}}
            rows.append(sft_row(messages, source="t", source_id=f"{pid}-{i}", meta=meta))
    kept, _, stats = Binarizer(BinarizeStageConfig(rejected="lowest")).run(prompt_groups(to_frame(rows, "sft")))
    pairs, errors = to_preference_rows(kept, "round-1", "lowest")
    assert stats.dropped == {"score_tie": 1} and errors == []
    assert pair_figures(pairs) == {"rows": 1, "score_chosen": 4.5, "score_rejected": 2.0, "margin_mean": 2.5,
                                   "margin_min": 2.5, "chosen_chars": 2.0, "rejected_chars": 1.0}
    assert pair_figures(pairs.head(0)) == {"rows": 0}


# --- with the default model ---------------------------------------------------------------------------------


def random_adapter(folder: Path, r: int = 4, seed: int = 0) -> Path:
    """A LoRA adapter on the default model whose B matrices are not zero (so it changes the outputs)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignmix.pipeline.models import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(resolve_model("default"), dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_init_adapter_continues_from_its_weights_and_the_reference_stays_the_base(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from alignmix.pipeline.models import resolve_model
    from alignmix.training.modeling import load_init_adapter, reference

    saved = random_adapter(tmp_path / "round-1")
    base = AutoModelForCausalLM.from_pretrained(resolve_model("default"), dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    load_init_adapter(model, saved)
    weights = load_file(str(saved / "adapter_model.safetensors"))
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(weights) == 4 * 30  # q and v, A and B, in each of the 30 layers
    for name, tensor in weights.items():
        key = name.replace(".lora_A.weight", ".lora_A.default.weight").replace(".lora_B.weight", ".lora_B.default.weight")
        assert torch.equal(loaded[key].detach(), tensor)
    with torch.no_grad():
        assert not torch.allclose(model(input_ids=ids).logits, base_logits, atol=1e-3)  # the policy moved
        with reference(model):
            assert torch.allclose(model(input_ids=ids).logits, base_logits, atol=1e-5)  # the reference did not
    other = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model("default")),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    with pytest.raises(ValueError, match=r"init_adapter .*round-1: its LoRA settings differ .*'r': \(4, 8\)"):
        load_init_adapter(other, saved)


@pytest.mark.slow
def test_the_transformers_backend_samples_through_an_adapter(tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from alignmix.pipeline.models import resolve_model
    from alignmix.synth.backends import GenerationRequest, SamplingParams, get_backend

    adapter = random_adapter(tmp_path / "adapter", seed=1)
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    req = [GenerationRequest(messages=chat, params=SamplingParams(max_new_tokens=12, temperature=0.0))]
    plain = get_backend({"backend": "transformers", "model": "default", "dtype": "float32"})
    tuned = get_backend({"backend": "transformers", "model": "default", "dtype": "float32", "adapter": str(adapter)})
    before, after = plain.generate(req)[0], tuned.generate(req)[0]
    assert tuned.describe() == {"backend": "transformers", "model": "default", "adapter": str(adapter)}
    # The reference: peft's own model, greedy, token for token.
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model("default"),
                                                                           dtype=torch.float32), str(adapter))
    ids = torch.tensor([tuned.tokenizer(tuned.render_chat(chat), add_special_tokens=False)["input_ids"]])
    out = model.generate(input_ids=ids, max_new_tokens=after.completion_tokens, do_sample=False)
    assert tuned.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False).startswith(after.text)
    assert before.text != after.text
    tuned.release()


# --- the demo ---------------------------------------------------------------------------------------------------


def run_build(recipe: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}  # 2 shared cores: a slow start
    return subprocess.run([str(BIN / "alignmix"), "build", str(recipe)], capture_output=True, text=True, env=env,
                          timeout=1500, check=False)


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("iterative")
    recipe = demo_recipe()
    recipe["sources"][0]["path"] = str(RECIPES_DIR / recipe["sources"][0]["path"])
    recipe["output"]["dir"] = str(root / "out")
    path = root / "iterative-demo.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = run_build(path)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return path, root / "out" / "iterative-demo"


@pytest.mark.slow
def test_the_demo_writes_two_rounds_each_trained_from_the_last(demo_build):
    import datasets

    _, mix = demo_build
    metrics = [json.loads(line) for line in (mix / "rounds" / "metrics.jsonl").read_text().splitlines()]
    assert [m["round"] for m in metrics] == [1, 2]
    for m in metrics:
        k, folder = m["round"], mix / "rounds" / f"round-{m['round']}"
        assert (folder / "adapter" / "adapter_config.json").exists() and m["adapter"] == str(folder / "adapter")
        steps = {s["stage"]: s for s in m["steps"]}
        assert list(steps) == ["responses", "judge", "binarize", "exact_dedup", "quality", "dpo"]
        assert steps["responses"]["rows_in"] == 4 * 4  # 4 prompts, 4 answers each
        assert steps["judge"]["rows_in"] == steps["responses"]["rows_kept"]
        assert steps["binarize"]["rows_in"] == 4
        assert steps["exact_dedup"]["rows_in"] == steps["binarize"]["rows_kept"]
        assert steps["quality"]["rows_in"] == steps["exact_dedup"]["rows_kept"]
        assert steps["dpo"]["rows_in"] == steps["quality"]["rows_kept"] == m["pairs"]["rows"] > 0
        for s in m["steps"][:-1]:
            assert s["rows_in"] == s["rows_kept"] + sum(s["dropped"].values()), s
        # The round's pairs, drops and stats on disk, the pairs loadable by `datasets`.
        pairs = datasets.load_dataset("parquet", data_dir=str(folder / "data"), split="train")
        assert pairs.num_rows == m["pairs"]["rows"] and set(pairs["source"]) == {f"round-{k}"}
        assert all(p["score_chosen"] > p["score_rejected"] for p in pairs)
        assert {p.stem for p in (folder / "rejected").glob("*.parquet")} >= {"responses", "binarize", "exact_dedup",
                                                                           "quality"}
        assert {p.stem for p in (folder / "stats").glob("*.json")} >= {"responses", "judge", "binarize", "round"}
        assert m["train"]["steps"] == 4 and m["heldout"]["pairs"] == MixStore(mix / "rounds" / "heldout").read().height
        w = m["win_rate"]
        assert w["wins"] + w["ties"] + w["losses"] == w["prompts"] and w["prompts"] + w["missing"] == 4
        assert m["samples"]["rows"] == steps["responses"]["rows_kept"] and m["samples"]["mean_chars"] > 0
    assert metrics[0]["sampled_from"] == "default"
    assert metrics[1]["sampled_from"] == metrics[0]["adapter"]  # round 2 samples from round 1's policy
    config = yaml.safe_load((mix / "rounds" / "round-2" / "config.yaml").read_text())["dpo"]
    assert config["init_adapter"] == metrics[0]["adapter"] and config["model"] == "default"
    # The mix holds both rounds' curated pairs.
    mixed = MixStore(mix).read()
    assert set(mixed["source"]) == {"round-1", "round-2"}


@pytest.mark.slow
def test_the_card_shows_every_round(demo_build):
    _, mix = demo_build
    readme = (mix / "README.md").read_text()
    for title in ("## Iterative DPO rounds", "## Round 1", "## Round 2"):
        assert title in readme
    assert "Round 2 sampled from " + str(mix / "rounds" / "round-1" / "adapter") in readme
    assert "![per-round figures of iterative DPO](card/rounds.png)" in readme
    assert (mix / "card" / "rounds.png").stat().st_size > 0


@pytest.mark.slow
def test_a_second_build_skips_the_finished_rounds(demo_build):
    recipe, mix = demo_build
    before = {p: sha256_file(p) for p in [mix / "rounds" / "metrics.jsonl",
                                          *sorted((mix / "rounds").glob("round-*/adapter/adapter_model.safetensors")),
                                          *sorted((mix / "rounds").glob("round-*/data/*.parquet"))]}
    proc = run_build(recipe)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    for k in (1, 2):
        assert f"round {k}: finished in an earlier run, skipped" in log
    assert "train-round" not in log  # no round trained again
    assert {p: sha256_file(p) for p in before} == before
