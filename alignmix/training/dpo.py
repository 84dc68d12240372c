"""DPO on a mix's preference rows: TRL's DPOTrainer with a LoRA adapter whose disabled state is the reference.

Losses: `sigmoid` (DPO) and `ipo` are TRL's; `simpo` (reference-free: beta times the length-normalized
log-probability, minus a target margin gamma) is added here, since TRL 1.16's DPOTrainer has no SimPO loss.
At each logging step the trainer also records `kl`, the exact KL(policy || reference) summed over the
completion tokens of the batch, averaged over sequences, from the hidden states of the step's own policy and
reference forwards (no extra forward pass).

    >>> result = train_dpo("out/uf-mix", "runs/dpo", load_config("dpo", overrides=["max_steps=20"]))  # doctest: +SKIP
    >>> result["eval"]["after"]["reward_accuracy"]                                                  # doctest: +SKIP
    0.62
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from trl import DPOConfig, DPOTrainer

from alignmix.pipeline.store import write_json
from alignmix.training import evaluate as ev
from alignmix.training.config import DPOTrainConfig
from alignmix.training.data import (
    Prepared,
    TrainingDataError,
    drop_long_prompts,
    has_split,
    preference_examples,
    read_split,
)
from alignmix.training.lm_head import causal_lm, hidden_states, kl_sum, lean_fused_head, scored_positions
from alignmix.training.metrics import MetricsCallback
from alignmix.training.progress import TrainingProgress
from alignmix.training.modeling import load_init_adapter, lora_config, load_policy, reference
from alignmix.training.outputs import Layout, prepare_run, run_lock, train_and_finish, trainer_kwargs

log = logging.getLogger("alignmix.training")


class AlignmixDPOTrainer(DPOTrainer):
    """DPOTrainer plus the SimPO loss, the exact KL from the reference at logging steps, and TRL's fused LM head
    scoring the completion positions only (lm_head.lean_fused_head).

    `simpo_gamma` set (not None) switches the loss to SimPO:
        loss = -log sigmoid(beta * (logp_c/|y_c| - logp_r/|y_r|) - gamma)
    and the logged rewards are beta * logp/|y| (the reference is not consulted).

    The KL reuses the step's own forwards: a hook keeps the backbone's last hidden state of the policy forward
    and of the reference forward (adapter disabled) that DPO runs anyway, and the LM head projects the completion
    positions of both (lm_head.kl_sum). SimPO has no reference forward, so at its logging steps one runs (no grad).
    """

    def __init__(self, *args: Any, simpo_gamma: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.simpo_gamma = simpo_gamma
        self._hidden: list[torch.Tensor] | None = None  # a list while a logging step's forwards run
        causal_lm(self.model).base_model.register_forward_hook(self._keep_hidden)

    def _keep_hidden(self, module, args, output) -> None:
        if self._hidden is not None:
            self._hidden.append(output[0].detach())

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        logging_step = mode == "eval" or (self.state.global_step + 1) % int(self.args.logging_steps) == 0
        self._hidden = [] if logging_step else None
        try:
            with lean_fused_head():
                if self.simpo_gamma is None:
                    out = super()._compute_loss(model, inputs, return_outputs)
                else:
                    out = self._simpo_loss(model, inputs)
            if logging_step:
                self._metrics[mode]["kl"].append(self._step_kl(inputs))
        finally:
            self._hidden = None
        return out

    @torch.no_grad()
    def _step_kl(self, inputs: dict[str, torch.Tensor]) -> float:
        """KL(pi || pi_ref) over the full vocabulary at each completion position, summed per sequence, averaged
        over the batch's sequences (chosen and rejected), from the hidden states this step's forwards kept."""
        model = self.accelerator.unwrap_model(self.model)
        if len(self._hidden) == 1:  # SimPO: the policy forward only
            with reference(model), self.accelerator.autocast():
                hidden_states(model, inputs["input_ids"], inputs["attention_mask"])
        policy, ref = self._hidden[:2]
        with self.accelerator.autocast():
            total = kl_sum(model, policy, ref, scored_positions(inputs["completion_mask"]),
                            lambda: reference(model))
        return total / max(inputs["input_ids"].size(0), 1)

    def _simpo_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        completion_mask = inputs["completion_mask"]
        model_kwargs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, use_cache=False, labels=labels, fused_lm_head=True)
        shift_mask = completion_mask[..., 1:]
        logps = outputs.log_probs[:, -shift_mask.size(1) :].sum(dim=1)
        avg = logps / shift_mask.sum(dim=1).clamp(min=1)
        avg_c, avg_r = avg.chunk(2, dim=0)
        logps_c, logps_r = logps.chunk(2, dim=0)
        loss = -F.logsigmoid(self.beta * (avg_c - avg_r) - self.simpo_gamma).mean()

        r_c, r_r = (self.beta * avg_c).detach(), (self.beta * avg_r).detach()
        gather = self.accelerator.gather_for_metrics
        if mode == "train":
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
        m = self._metrics[mode]
        m["num_tokens"] = [self._total_train_tokens]
        m["rewards/chosen"].append(gather(r_c).mean().item())
        m["rewards/rejected"].append(gather(r_r).mean().item())
        m["rewards/accuracies"].append(gather((r_c > r_r).float()).mean().item())
        m["rewards/margins"].append(gather(r_c - r_r).mean().item())
        m["logps/chosen"].append(gather(logps_c.detach()).mean().item())
        m["logps/rejected"].append(gather(logps_r.detach()).mean().item())
        return loss


def build_dpo_trainer(config: DPOTrainConfig, layout: Layout, model: Any, tokenizer: Any,
                      rows: list[dict[str, Any]], callbacks: list[Any] | None = None) -> AlignmixDPOTrainer:
    """The trainer for `rows` (prompt/chosen/rejected message lists); wraps `model` in a fresh LoRA adapter."""
    from datasets import Dataset

    args = DPOConfig(
        **trainer_kwargs(config, layout),
        beta=float(config.beta),
        loss_type=["sigmoid" if config.loss == "simpo" else config.loss],  # simpo: AlignmixDPOTrainer's own loss
        precompute_ref_log_probs=False,
    )
    trainer = AlignmixDPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]),
        processing_class=tokenizer,
        peft_config=lora_config(config.lora),
        callbacks=callbacks or [],
        simpo_gamma=config.simpo_gamma if config.loss == "simpo" else None,
    )
    if config.init_adapter:  # iterative DPO: continue from the last round's adapter, reference unchanged
        load_init_adapter(trainer.model, config.init_adapter)
    return trainer


def train_dpo(mix_dir: str | Path, out_dir: str | Path, config: DPOTrainConfig | None = None) -> dict[str, Any]:
    """Train a DPO LoRA adapter on the mix's `train` preference rows; evaluate on `test` before and after.

    Returns the result record (also written to <out>/result.json): paths (adapter, merged, metrics, plots,
    model_card), `eval` {before, after}, `generations`, `warnings`, `train` figures, `config`.
    """
    config = config or DPOTrainConfig()
    layout = Layout(out_dir)
    with run_lock(layout):
        return _train_dpo(mix_dir, layout, config)


def _train_dpo(mix_dir: str | Path, layout: Layout, config: DPOTrainConfig) -> dict[str, Any]:
    prepare_run(config, layout, "dpo")
    # Read and check the data before loading the model, so that a wrong mix fails before any compute.
    train = preference_examples(read_split(mix_dir, "train", "preference", config.max_train_rows))
    test = Prepared([])
    if config.eval_rows and has_split(mix_dir, "test"):
        test = preference_examples(read_split(mix_dir, "test", "preference", config.eval_rows))
    model, tokenizer, base_path = load_policy(config, layout.root)
    train = drop_long_prompts(train, tokenizer, config.max_length)
    test = drop_long_prompts(test, tokenizer, config.max_length)
    if not train.rows:
        raise TrainingDataError(f"{mix_dir}: no usable preference rows in train ({train.rejected_counts()}); "
                                f"a larger max_length may help")
    test_rows = test.rows
    metrics_cb = MetricsCallback(
        layout.metrics,
        warn_kl=config.warn_kl,
        warn_margin_growth=config.warn_margin_growth,
        warn_chosen_logps_drop=config.warn_chosen_logps_drop,
    )
    callbacks = [metrics_cb, TrainingProgress("train-dpo")]
    trainer = build_dpo_trainer(config, layout, model, tokenizer, train.rows, callbacks)
    policy = trainer.model
    beta = float(config.beta)

    # Before: the policy at step 0 is the reference (a fresh LoRA adds zero), so score with the adapter disabled;
    # that holds on resume too. With init_adapter, the policy at step 0 is that adapter's (before a resume).
    tokenized = ev.tokenize_pairs(tokenizer, test_rows, config.max_length)
    prompts = [r["prompt"] for r in test_rows][: config.generations]
    with reference(policy):
        ref_scores = ev.score_pairs(policy, tokenized, tokenizer.pad_token_id, config.batch_size)
    start = ev.score_pairs(policy, tokenized, tokenizer.pad_token_id, config.batch_size) if config.init_adapter else ref_scores
    before = ev.preference_metrics(start, ref_scores, beta, config.loss)
    result = train_and_finish(
        "dpo", trainer, layout, config, mix_dir, base_path, tokenizer, train=train, prompts=prompts, before=before,
        evaluate_after=lambda p: ev.preference_metrics(
            ev.score_pairs(p, tokenized, tokenizer.pad_token_id, config.batch_size), ref_scores, beta, config.loss
        ),
        metrics_cb=metrics_cb, extra={"test_rows_set_aside": test.rejected_counts()},
    )
    after = result["eval"]["after"]
    log.info("dpo: %s steps, test reward accuracy %s -> %s", result["train"]["steps"], before.get("reward_accuracy"),
             after.get("reward_accuracy"))
    return result


SWEEP_BETAS = (0.05, 0.1, 0.5)
SWEEP_COLUMNS = ("rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected", "kl", "loss")


def beta_sweep(mix_dir: str | Path, out_dir: str | Path, config: DPOTrainConfig | None = None,
               betas: tuple[float, ...] = SWEEP_BETAS) -> dict[str, Any]:
    """DPO at each beta on the same data (same seed), one run per `<out>/beta-<b>`; the final training
    metrics and held-out figures side by side, also written to `<out>/sweep.json`.

    A smaller beta lets the policy move further from the reference: larger margins and KL, and usually a
    higher train reward accuracy that may or may not carry over to the test split.
    """
    config = config or DPOTrainConfig()
    rows = []
    for b in betas:
        run = train_dpo(mix_dir, Path(out_dir) / f"beta-{b:g}", config.model_copy(update={"beta": b}))
        final = run["train"]["final"]
        rows.append({
            "beta": b,
            **{k: final.get(k) for k in SWEEP_COLUMNS},
            "test_reward_accuracy": run["eval"]["after"].get("reward_accuracy"),
            "test_logp_accuracy": run["eval"]["after"].get("logp_accuracy"),
            "warnings": len(run["warnings"]),
            "out_dir": run["out_dir"],
        })
    sweep = {"mix": str(mix_dir), "loss": config.loss, "betas": list(betas), "runs": rows}
    write_json(Path(out_dir) / "sweep.json", sweep)
    return sweep
