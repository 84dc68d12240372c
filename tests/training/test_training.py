"""Training: configs, the assistant-only loss mask, the metric warnings, and (slow) LoRA SFT then DPO on the
default model over mixes built from real data, with resume; QLoRA SFT and DPO (NF4 layers on CPU or CUDA)."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
import torch

from alignmix.pipeline.schema import to_frame
from alignmix.training.config import ConfigError, load_config
from alignmix.training.data import preference_examples, tokenize_sft
from alignmix.training.evaluate import ScoredPairs, preference_metrics
from alignmix.training.metrics import DPO_KEYS, check_signals, read_metrics

from .conftest import alpaca_records

THRESHOLDS = {"warn_kl": 10.0, "warn_margin_growth": 0.5, "warn_chosen_logps_drop": 0.25}
# Small enough for 2 shared CPU cores: short sequences, one or two rows per step, a few steps.
TINY = ["batch_size=2", "max_length=96", "warmup_ratio=0", "eval_rows=4", "generations=1", "max_new_tokens=8"]


# --- configs ----------------------------------------------------------------------------------------------


def test_config_defaults_follow_common_practice():
    sft, dpo = load_config("sft"), load_config("dpo")
    assert (sft.lora.r, sft.lora.alpha, sft.lora.dropout, sft.lora.target_modules) == (16, 32, 0.05, "all-linear")
    assert sft.learning_rate == 2e-4
    assert (dpo.loss, dpo.beta, dpo.learning_rate, dpo.num_epochs) == ("sigmoid", 0.1, 5e-6, 1.0)
    assert load_config("dpo", overrides=["loss=simpo"]).beta == 2.0  # SimPO's own scale
    assert load_config("dpo", overrides=["loss=simpo"]).simpo_gamma == 1.0
    assert all(f.description for f in type(dpo).model_fields.values())  # every field carries its help text


def test_config_yaml_then_overrides(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("dpo:\n  beta: 0.3\n  max_steps: 7\n  lora: {r: 4}\n")
    cfg = load_config("dpo", path, ["max_steps=9", "lora.target_modules=[q_proj, v_proj]"])
    assert (cfg.beta, cfg.max_steps, cfg.lora.r, cfg.lora.target_modules) == (0.3, 9, 4, ["q_proj", "v_proj"])


def test_config_errors_name_field_value_and_fix():
    with pytest.raises(ConfigError) as err:
        load_config("dpo", overrides=["lora.rank=8", "beta=-1"])
    msg = str(err.value)
    assert "dpo.lora.rank = 8: Extra inputs are not permitted (fix:" in msg
    assert "dpo.beta = -1: Input should be greater than 0" in msg
    with pytest.raises(ConfigError, match="has no '='"):
        load_config("sft", overrides=["max_steps"])


# --- the loss mask ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    from alignmix.pipeline.models import resolve_model
    from alignmix.training.modeling import load_tokenizer

    return load_tokenizer(resolve_model("default"))


def test_assistant_mask_covers_exactly_the_assistant_tokens(tokenizer, shared_data):
    a, b = alpaca_records(shared_data, 2)
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": a["instruction"]},
        {"role": "assistant", "content": a["output"]},
        {"role": "user", "content": b["instruction"]},
        {"role": "assistant", "content": b["output"]},
    ]
    enc = tokenize_sft(tokenizer, messages)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    # The whole rendered conversation is there, and the masked tokens are exactly each assistant turn's
    # content followed by its end-of-turn token, in order: nothing of the system/user turns, no role headers.
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template(messages, tokenize=False)
    masked = [t for t, m in zip(ids, mask) if m]
    expected = []
    for m in messages:
        if m["role"] == "assistant":
            expected += tokenizer(m["content"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
    assert masked == expected
    # Each masked run starts right after "<|im_start|>assistant\n" and ends on <|im_end|>.
    runs = [i for i in range(len(ids)) if mask[i] and (i == 0 or not mask[i - 1])]
    assert len(runs) == 2
    header = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    for start in runs:
        assert ids[start - len(header) : start] == header
    ends = [i for i in range(len(ids)) if mask[i] and (i + 1 == len(ids) or not mask[i + 1])]
    assert [ids[i] for i in ends] == [tokenizer.convert_tokens_to_ids("<|im_end|>")] * 2


def test_assistant_mask_is_truncated_with_the_ids(tokenizer):
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]
    full = tokenize_sft(tokenizer, messages)
    cut = tokenize_sft(tokenizer, messages, max_length=len(full["input_ids"]) - 3)
    assert cut["input_ids"] == full["input_ids"][:-3] and cut["assistant_masks"] == full["assistant_masks"][:-3]


# --- data, metrics and warnings ---------------------------------------------------------------------------


def test_preference_rows_become_prompt_chosen_rejected_and_mismatches_get_a_reason():
    u = {"role": "user", "content": "Name a colour."}
    good = {"id": "a", "chosen": [u, {"role": "assistant", "content": "Blue."}],
            "rejected": [u, {"role": "assistant", "content": "No."}]}
    bad = {"id": "b", "chosen": [u, {"role": "assistant", "content": "Red."}],
           "rejected": [{"role": "user", "content": "Other."}, {"role": "assistant", "content": "No."}]}
    rows = [{**r, "prompt": "p", "score_chosen": None, "score_rejected": None, "source": "t", "source_id": "0",
             "meta": "{}"} for r in (good, bad)]
    prepared = preference_examples(to_frame(rows, "preference"))
    assert prepared.rows == [{"id": "a", "prompt": [u], "chosen": [good["chosen"][1]],
                              "rejected": [good["rejected"][1]]}]
    assert prepared.rejected_counts() == {"prompt_mismatch": 1}
    assert prepared.rejected[0]["id"] == "b"


def test_pairs_whose_prompt_fills_max_length_are_set_aside_with_a_reason(tokenizer):
    from alignmix.training.data import Prepared, drop_long_prompts

    def pair(i, prompt):
        return {"id": str(i), "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": "Yes."}], "rejected": [{"role": "assistant", "content": "No."}]}

    kept = drop_long_prompts(Prepared([pair(0, "Is water wet?"), pair(1, "word " * 200)]), tokenizer, 96)
    assert [r["id"] for r in kept.rows] == ["0"]
    assert kept.rejected_counts() == {"prompt_too_long": 1} and kept.rejected[0]["id"] == "1"


def test_each_warning_fires_on_the_signal_built_to_trip_it():
    first = {"step": 1, "rewards/margins": 0.0, "logps/chosen": -100.0, "kl": 0.0}
    calm = {"step": 5, "rewards/margins": 1.0, "logps/chosen": -110.0, "kl": 2.0}
    assert check_signals(first, first, calm, **THRESHOLDS) == []
    fast = {"step": 5, "rewards/margins": 2.5, "logps/chosen": -110.0, "kl": 2.0}  # 0.625 per step
    assert [w["code"] for w in check_signals(first, first, fast, **THRESHOLDS)] == ["margins_fast"]
    falling = {"step": 5, "rewards/margins": 1.0, "logps/chosen": -126.0, "kl": 2.0}  # down 26 %
    assert [w["code"] for w in check_signals(first, first, falling, **THRESHOLDS)] == ["chosen_logps_falling"]
    far = {"step": 5, "rewards/margins": 1.0, "logps/chosen": -100.0, "kl": 10.5}
    assert [w["code"] for w in check_signals(first, first, far, **THRESHOLDS)] == ["kl_high"]


def test_preference_accuracy_counts_ties_as_half_and_dpo_rewards_are_relative_to_the_reference():
    ref = ScoredPairs(torch.tensor([-10.0, -10.0, -10.0]), torch.tensor([5.0] * 3),
                      torch.tensor([-12.0, -8.0, -10.0]), torch.tensor([5.0] * 3))
    assert preference_metrics(ref, ref, 0.1, "sigmoid") == {
        "pairs": 3, "reward_accuracy": 0.5, "reward_margin": 0.0, "logp_accuracy": 0.5}
    moved = ScoredPairs(torch.tensor([-9.0, -9.0, -11.0]), torch.tensor([5.0] * 3),
                        torch.tensor([-12.0, -8.0, -10.0]), torch.tensor([5.0] * 3))
    got = preference_metrics(moved, ref, 0.1, "sigmoid")  # margins: +0.1, +0.1, -0.1
    assert (got["reward_accuracy"], got["reward_margin"]) == (0.666667, 0.033333)  # rounded to 6 places


# --- slow: real model, real data ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sft_run(sft_mix, tmp_path_factory):
    from alignmix.training import train_sft

    out = tmp_path_factory.mktemp("sft-run")
    return train_sft(sft_mix, out, load_config("sft", overrides=[*TINY, "max_steps=3", "learning_rate=1e-3"]))


@pytest.fixture(scope="module")
def dpo_run(pref_mix, sft_run, tmp_path_factory):
    from alignmix.training import train_dpo

    out = tmp_path_factory.mktemp("dpo-run")
    cfg = load_config("dpo", overrides=[*TINY, f"model={sft_run['out_dir']}", "max_steps=2", "save_steps=1",
                                         "learning_rate=1e-3", "batch_size=1"])
    return train_dpo(pref_mix, out, cfg)


def _lora_b(adapter_dir: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(Path(adapter_dir) / "adapter_model.safetensors").items() if "lora_B" in k}


@pytest.mark.slow
def test_sft_trains_the_adapter_on_assistant_tokens(sft_run):
    # lora_B starts at zero: every one of them nonzero means every targeted linear layer was trained.
    lora_b = _lora_b(sft_run["adapter"])
    assert len(lora_b) == 30 * 7  # 30 layers x (q, k, v, o, gate, up, down): "all-linear"
    assert all(float(t.abs().sum()) > 0 for t in lora_b.values())
    assert sft_run["train"]["adapter_delta_norm"] > 0
    assert sft_run["train"]["steps"] == 3 and sft_run["train"]["rows"] == 8
    assert sft_run["eval"]["before"]["rows"] == 4 and sft_run["eval"]["after"]["rows"] == 4
    assert sft_run["eval"]["after"]["nll_per_token"] != sft_run["eval"]["before"]["nll_per_token"]
    steps = [r["step"] for r in read_metrics(sft_run["metrics"]) if "warnings" in r]
    assert steps == [1, 2, 3]


@pytest.mark.slow
def test_sft_trainer_labels_equal_the_assistant_mask(sft_run, sft_mix):
    """What SFTTrainer trains on (labels != -100) is exactly our assistant mask, row by row."""
    from alignmix.training.data import read_split, sft_examples
    from alignmix.training.modeling import load_policy
    from alignmix.training.outputs import Layout
    from alignmix.training.sft import build_sft_trainer

    cfg = load_config("sft", overrides=TINY)
    model, tok, _ = load_policy(cfg, sft_run["out_dir"])
    prepared = sft_examples(read_split(sft_mix, "train", "sft"), tok, cfg.max_length)
    trainer = build_sft_trainer(cfg, Layout(Path(sft_run["out_dir"]) / "labels-check"), model, tok, prepared.rows, [])
    assert len(trainer.train_dataset) == len(prepared.rows) == 8
    for row, prepared_row in zip(trainer.train_dataset, prepared.rows):
        trained = [int(label != -100) for label in row["labels"]]
        assert row["input_ids"] == prepared_row["input_ids"]
        assert trained == prepared_row["assistant_masks"]


@pytest.mark.slow
def test_dpo_after_sft_writes_metrics_eval_card_and_changes_the_adapter(dpo_run, sft_run, pref_mix):
    assert dpo_run["base_model"] == str(Path(dpo_run["out_dir"]) / "base")  # the merged SFT model
    assert dpo_run["train"]["rows"] == 8 and dpo_run["train"]["rows_set_aside"] == {}
    assert all(float(t.abs().sum()) > 0 for t in _lora_b(dpo_run["adapter"]).values())
    steps = [r for r in read_metrics(dpo_run["metrics"]) if "warnings" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for record in steps:
        assert set(DPO_KEYS) <= set(record), set(DPO_KEYS) - set(record)
    # Step 1 runs before any update: policy == reference, so rewards and KL are zero.
    assert steps[0]["rewards/margins"] == 0.0 and steps[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert steps[1]["kl"] > 0
    before, after = dpo_run["eval"]["before"], dpo_run["eval"]["after"]
    assert before["pairs"] == after["pairs"] == 4
    assert before["reward_accuracy"] == 0.5 and before["reward_margin"] == 0.0
    assert after["reward_margin"] != 0.0
    assert len(dpo_run["generations"]) == 1 and set(dpo_run["generations"][0]) == {"prompt", "before", "after"}
    assert {Path(p).name for p in dpo_run["plots"]} >= {"loss.png", "rewards.png", "kl.png", "logps.png"}
    card = Path(dpo_run["model_card"]).read_text()
    assert card.startswith("---\nlibrary_name: peft\n")
    data_card = os.path.relpath(Path(pref_mix).resolve() / "README.md", Path(dpo_run["out_dir"]).resolve())
    assert f"its data card: [{data_card}]({data_card})" in card
    assert orjson.loads(Path(dpo_run["out_dir"], "result.json").read_bytes())["eval"] == dpo_run["eval"]


@pytest.mark.slow
def test_dpo_resumes_from_its_last_checkpoint(dpo_run, pref_mix, sft_run):
    from alignmix.training import train_dpo

    cfg = load_config("dpo", overrides=[*TINY, f"model={sft_run['out_dir']}", "max_steps=3", "save_steps=1",
                                         "learning_rate=1e-3", "batch_size=1", "eval_rows=0", "generations=0"])
    again = train_dpo(pref_mix, dpo_run["out_dir"], cfg)
    assert Path(again["train"]["resumed_from"]).name == "checkpoint-2"
    assert again["train"]["steps"] == 3
    steps = [r["step"] for r in read_metrics(again["metrics"]) if "warnings" in r]
    assert steps == [1, 2, 3]  # the two earlier lines kept, none twice


def _moved_trainer(cfg, work: Path, pref_mix: Path):
    """A DPO trainer on 2 train pairs whose policy was moved away from its reference (random lora_B), the base
    path, its first batch, and that batch's rows unpadded ([chosen..., rejected...], prompt then completion)."""
    from alignmix.training.data import read_split
    from alignmix.training.dpo import build_dpo_trainer
    from alignmix.training.modeling import load_policy
    from alignmix.training.outputs import Layout

    model, tok, base_path = load_policy(cfg, work)
    rows = preference_examples(read_split(pref_mix, "train", "preference", 2)).rows
    trainer = build_dpo_trainer(cfg, Layout(work), model, tok, rows)
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy: random lora_B
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = next(iter(trainer.get_train_dataloader()))
    seqs = []
    for ids, comp, attn in zip(*(batch[k].tolist() for k in ("input_ids", "completion_mask", "attention_mask"))):
        start, end = comp.index(1), sum(attn)
        seqs.append({"prompt_ids": ids[:start], "completion_ids": ids[start:end]})
    return trainer, base_path, batch, seqs


@pytest.mark.slow
def test_reference_logps_equal_the_base_models(dpo_run, pref_mix):
    """The trainer's reference (the policy with its adapter disabled) scores a batch exactly as a fresh copy
    of the base model does, even after the adapter has moved the policy away from it."""
    from transformers import AutoModelForCausalLM

    from alignmix.training.modeling import completion_logps

    cfg = load_config("dpo", overrides=[*TINY, f"model={dpo_run['base_model']}"])
    trainer, base_path, batch, seqs = _moved_trainer(cfg, Path(dpo_run["out_dir"]) / "ref-check", pref_mix)
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)

    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    pad = trainer.processing_class.pad_token_id
    base_logps, _ = completion_logps(base, seqs, pad)
    policy_logps, lens = completion_logps(trainer.model, seqs, pad)
    torch.testing.assert_close(torch.cat([ref_chosen, ref_rejected]).cpu(), base_logps, atol=2e-3, rtol=1e-5)
    assert (policy_logps - base_logps).abs().max() > 1e-2  # the adapter is on outside the reference

    # SimPO on the same batch: -log sigmoid(beta * (mean logp chosen - mean logp rejected) - gamma), no reference.
    trainer.simpo_gamma, trainer.beta = 1.0, 2.0
    loss = trainer._simpo_loss(trainer.model, batch)
    avg_c, avg_r = (policy_logps / lens).chunk(2)
    expected = -torch.nn.functional.logsigmoid(2.0 * (avg_c - avg_r) - 1.0).mean()
    torch.testing.assert_close(loss.detach().cpu(), expected, atol=1e-4, rtol=1e-4)
    assert trainer._metrics["train"]["rewards/chosen"][-1] == pytest.approx(float(2.0 * avg_c.mean()), abs=1e-4)


def _full_vocabulary_kl(model, batch) -> float:
    """KL(policy || reference) the direct way: full logits of two more forwards, per completion token, summed
    per sequence, averaged over the sequences."""
    from alignmix.training.modeling import reference

    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    with torch.no_grad():
        pol = model(**kw).logits[:, :-1].float().log_softmax(-1)
        with reference(model):
            ref = model(**kw).logits[:, :-1].float().log_softmax(-1)
    per_token = (pol.exp() * (pol - ref)).sum(-1) * batch["completion_mask"][:, 1:]
    return float(per_token.sum()) / batch["input_ids"].size(0)


@pytest.mark.slow
def test_the_logged_kl_comes_from_the_steps_own_forwards_and_equals_the_full_vocabulary_kl(pref_mix, tmp_path):
    """At a logging step, DPO's KL costs no forward pass beyond the policy and reference ones the loss needs
    (SimPO's: one reference forward), and equals the KL computed from two more forwards' full logits."""
    from alignmix.training.lm_head import causal_lm

    cfg = load_config("dpo", overrides=TINY)
    assert cfg.gradient_checkpointing and cfg.logging_steps == 1  # the defaults under test
    trainer, _, batch, _ = _moved_trainer(cfg, tmp_path, pref_mix)
    expected = _full_vocabulary_kl(trainer.model, batch)
    assert expected > 1e-3  # the policy was moved: a KL to get right
    forwards = []
    causal_lm(trainer.model).base_model.register_forward_hook(lambda *_: forwards.append(1))
    trainer.model.train()
    for gamma in (None, 1.0):  # sigmoid DPO, then SimPO
        forwards.clear()
        trainer.simpo_gamma = gamma
        trainer.compute_loss(trainer.model, batch).backward()
        assert len(forwards) == 2  # policy + reference, nothing else
        assert trainer._metrics["train"]["kl"][-1] == pytest.approx(expected, rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_cli_beta_sweep_reports_each_beta_side_by_side(pref_mix, tmp_path):
    from typer.testing import CliRunner

    from alignmix.cli import app

    out = tmp_path / "sweep"
    res = CliRunner().invoke(app, ["train", "beta-sweep", "--mix", str(pref_mix), "--out", str(out),
                                   "--betas", "0.05,0.5", "--max-steps", "1",
                                   *[f"--set={o}" for o in TINY], "--set", "eval_rows=2", "--set", "generations=0"])
    assert res.exit_code == 0, res.output
    sweep = orjson.loads((out / "sweep.json").read_bytes())
    assert [r["beta"] for r in sweep["runs"]] == [0.05, 0.5]
    for run in sweep["runs"]:
        assert run["test_reward_accuracy"] is not None and run["kl"] is not None
        assert orjson.loads((Path(run["out_dir"]) / "result.json").read_bytes())["config"]["beta"] == run["beta"]
    assert "DPO beta sweep" in res.output


# --- QLoRA: NF4 + double quantization, LoRA on all linear layers; on CUDA or, through bitsandbytes, on CPU ---
# Measured on 2 shared CPU cores (bf16 compute): the SFT run 105 s, the DPO run (merge, re-quantize, train)
# 174 s, the reference check 77 s.


@pytest.fixture(scope="module")
def qlora_sft_run(sft_mix, tmp_path_factory):
    from alignmix.training import train_sft

    out = tmp_path_factory.mktemp("qlora-sft")
    cfg = load_config("sft", overrides=[*TINY, "quantize=4bit", "max_steps=2", "learning_rate=1e-3", "eval_rows=2",
                                        "generations=0"])  # fmt: skip
    return train_sft(sft_mix, out, cfg)


@pytest.fixture(scope="module")
def qlora_dpo_run(pref_mix, qlora_sft_run, tmp_path_factory):
    from alignmix.training import train_dpo

    out = tmp_path_factory.mktemp("qlora-dpo")
    cfg = load_config("dpo", overrides=[*TINY, "quantize=4bit", f"model={qlora_sft_run['out_dir']}", "max_steps=2",
                                        "learning_rate=1e-3", "batch_size=1", "eval_rows=2", "generations=0"])  # fmt: skip
    return train_dpo(pref_mix, out, cfg)


@pytest.mark.slow
def test_qlora_sft_trains_lora_on_4bit_layers(qlora_sft_run):
    from alignmix.training.modeling import compute_dtype

    figures = qlora_sft_run["train"]
    print(f"QLoRA SFT ({compute_dtype(four_bit=True)} compute): {figures['linear4bit_layers']} Linear4bit layers, "
          f"peak GPU memory {figures['peak_gpu_memory_mib']} MiB, {figures['tokens_per_s']} tokens/s")
    assert figures["linear4bit_layers"] == 30 * 7  # every linear layer but the LM head is NF4
    assert (figures["peak_gpu_memory_mib"] is None) == (not torch.cuda.is_available())
    assert figures["steps"] == 2 and figures["adapter_delta_norm"] > 0
    lora_b = _lora_b(qlora_sft_run["adapter"])
    assert len(lora_b) == 30 * 7 and all(float(t.abs().sum()) > 0 for t in lora_b.values())
    assert qlora_sft_run["config"]["quantize"] == "4bit"
    assert "qlora" in Path(qlora_sft_run["model_card"]).read_text()


@pytest.mark.slow
def test_qlora_dpo_after_qlora_sft_trains_on_the_merged_base_in_4bit(qlora_dpo_run):
    figures = qlora_dpo_run["train"]
    assert qlora_dpo_run["base_model"] == str(Path(qlora_dpo_run["out_dir"]) / "base")
    assert figures["linear4bit_layers"] == 30 * 7 and figures["steps"] == 2
    assert all(float(t.abs().sum()) > 0 for t in _lora_b(qlora_dpo_run["adapter"]).values())
    steps = [r for r in read_metrics(qlora_dpo_run["metrics"]) if "warnings" in r]
    assert steps[0]["rewards/margins"] == 0.0 and steps[1]["kl"] != 0.0


@pytest.mark.slow
def test_qlora_reference_logps_equal_the_4bit_base_models(qlora_dpo_run, pref_mix):
    """The reference of a QLoRA DPO run (adapter disabled) scores a batch exactly as a fresh 4-bit load of the
    base does, after the adapter has moved the policy away from it."""
    from alignmix.training.modeling import completion_logps, load_policy

    work = Path(qlora_dpo_run["out_dir"]) / "ref-check"
    cfg = load_config("dpo", overrides=[*TINY, "quantize=4bit", f"model={qlora_dpo_run['base_model']}"])
    trainer, _, batch, seqs = _moved_trainer(cfg, work, pref_mix)
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    tok = trainer.processing_class

    base, _, _ = load_policy(cfg, work)  # a second, independent 4-bit load of the same base
    assert sum(type(m).__name__ == "Linear4bit" for m in base.modules()) == 30 * 7
    base_logps, _ = completion_logps(base, seqs, tok.pad_token_id)
    policy_logps, _ = completion_logps(trainer.model, seqs, tok.pad_token_id)
    torch.testing.assert_close(torch.cat([ref_chosen, ref_rejected]).float().cpu(), base_logps, atol=2e-2, rtol=1e-3)
    assert (policy_logps - base_logps).abs().max() > 1e-1  # the adapter is on outside the reference


def test_resume_refuses_checkpoints_of_another_config(tmp_path):
    from alignmix.training.outputs import Layout, prepare_run

    layout = Layout(tmp_path)
    prepare_run(load_config("dpo", overrides=["beta=0.1"]), layout, "dpo")
    (layout.checkpoints / "checkpoint-2").mkdir(parents=True)
    (layout.checkpoints / "checkpoint-2" / "trainer_state.json").write_text("{}")
    prepare_run(load_config("dpo", overrides=["beta=0.1", "max_steps=9"]), layout, "dpo")  # longer: fine
    with pytest.raises(ValueError, match=r"another config \(beta: 0.1 -> 0.5\)"):
        prepare_run(load_config("dpo", overrides=["beta=0.5", "max_steps=9"]), layout, "dpo")
    prepare_run(load_config("dpo", overrides=["beta=0.5", "resume=false"]), layout, "dpo")  # starting over: fine
    assert not layout.checkpoints.exists()


def test_sft_reads_the_chosen_conversations_of_a_preference_mix(pref_mix, sft_mix):
    from alignmix.training.data import TrainingDataError, read_sft_split, read_split

    pref = read_split(pref_mix, "train", "preference")
    sft = read_sft_split(pref_mix, "train")
    assert sft.height == 8 and sft["messages"].to_list() == pref["chosen"].to_list()
    assert read_sft_split(sft_mix, "test")["messages"].to_list() == read_split(sft_mix, "test", "sft")["messages"].to_list()
    with pytest.raises(TrainingDataError, match="holds sft rows, but this run needs preference rows"):
        read_split(sft_mix, "train", "preference")
    with pytest.raises(TrainingDataError, match=r"has no 'validation' shards \(splits present: test, train\)"):
        read_split(sft_mix, "validation", "sft")
