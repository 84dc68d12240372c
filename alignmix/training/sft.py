"""LoRA/QLoRA SFT on a mix's SFT rows with TRL's SFTTrainer, loss on the assistant tokens only.

The rows reach the trainer already tokenized, with `assistant_masks` built from the rendered turns
(data.tokenize_sft), so the mask does not depend on `{% generation %}` markers in the chat template;
SFTTrainer turns the mask into labels (-100 elsewhere).

    >>> result = train_sft("out/sft-mix", "runs/sft", load_config("sft", overrides=["max_steps=50"]))  # doctest: +SKIP
    >>> result["eval"]["before"]["nll_per_token"], result["eval"]["after"]["nll_per_token"]         # doctest: +SKIP
    (1.91, 1.62)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trl import SFTConfig, SFTTrainer

from alignmix.training import evaluate as ev
from alignmix.training.config import SFTTrainConfig
from alignmix.training.data import TrainingDataError, has_split, read_sft_split, sft_examples
from alignmix.training.lm_head import lean_fused_head
from alignmix.training.metrics import MetricsCallback
from alignmix.training.progress import TrainingProgress
from alignmix.training.modeling import lora_config, load_policy, reference
from alignmix.training.outputs import Layout, prepare_run, run_lock, train_and_finish, trainer_kwargs

log = logging.getLogger("alignmix.training")


class AlignmixSFTTrainer(SFTTrainer):
    """SFTTrainer whose fused LM head projects the assistant positions only, on every device
    (lm_head.lean_fused_head)."""

    def compute_loss(self, *args: Any, **kwargs: Any):
        with lean_fused_head():
            return super().compute_loss(*args, **kwargs)


def build_sft_trainer(config: SFTTrainConfig, layout: Layout, model: Any, tokenizer: Any,
                      rows: list[dict[str, Any]], callbacks: list[Any]) -> AlignmixSFTTrainer:
    from datasets import Dataset

    args = SFTConfig(
        **trainer_kwargs(config, layout),
        assistant_only_loss=False,  # the mask comes with the rows (assistant_masks), see data.tokenize_sft
        completion_only_loss=False,
        packing=False,
    )
    dataset = Dataset.from_list([{"input_ids": r["input_ids"], "assistant_masks": r["assistant_masks"]} for r in rows])
    return AlignmixSFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(config.lora),
        callbacks=callbacks,
    )


def train_sft(mix_dir: str | Path, out_dir: str | Path, config: SFTTrainConfig | None = None) -> dict[str, Any]:
    """Train a LoRA adapter on the mix's `train` SFT rows (or, in a preference mix, the chosen conversations);
    per-token NLL on `test` before and after.

    Returns the result record (also <out>/result.json), shaped like train_dpo's.
    """
    config = config or SFTTrainConfig()
    layout = Layout(out_dir)
    with run_lock(layout):
        return _train_sft(mix_dir, layout, config)


def _train_sft(mix_dir: str | Path, layout: Layout, config: SFTTrainConfig) -> dict[str, Any]:
    prepare_run(config, layout, "sft")
    # Read the data before loading the model, so that a wrong mix fails before any compute.
    train_frame = read_sft_split(mix_dir, "train", config.max_train_rows)
    test_convs = []
    if config.eval_rows and has_split(mix_dir, "test"):
        test_convs = read_sft_split(mix_dir, "test", config.eval_rows)["messages"].to_list()
    model, tokenizer, base_path = load_policy(config, layout.root)
    train = sft_examples(train_frame, tokenizer, config.max_length)
    if not train.rows:
        raise TrainingDataError(f"{mix_dir}: no usable SFT rows in train ({train.rejected_counts()})")
    metrics_cb = MetricsCallback(layout.metrics)
    callbacks = [metrics_cb, TrainingProgress("train-sft")]
    trainer = build_sft_trainer(config, layout, model, tokenizer, train.rows, callbacks)
    policy = trainer.model

    prompts = [c[:-1] for c in test_convs][: config.generations]
    with reference(policy):
        before = ev.sft_nll(policy, tokenizer, test_convs, config.max_length)
    result = train_and_finish(
        "sft", trainer, layout, config, mix_dir, base_path, tokenizer, train=train, prompts=prompts, before=before,
        evaluate_after=lambda p: ev.sft_nll(p, tokenizer, test_convs, config.max_length), metrics_cb=metrics_cb,
    )
    after = result["eval"]["after"]
    log.info("sft: %s steps, test nll %s -> %s", result["train"]["steps"], before.get("nll_per_token"),
             after.get("nll_per_token"))
    return result
