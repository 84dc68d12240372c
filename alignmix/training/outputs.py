"""What SFT and DPO runs share: the output folder layout, trainer arguments, checkpoints and the result record.

    <out>/
      adapter/            the LoRA adapter (+ tokenizer): load with peft.AutoPeftModelForCausalLM
      merged/             base + adapter merged, when merge=true
      base/               the merged SFT model this run started from, when --model was an SFT output
      checkpoints/        trainer checkpoints (resume points)
      metrics.jsonl       one line per logging step (see metrics.py)
      plots/*.png         the metrics plotted
      eval.json           held-out figures and generations, before and after
      config.yaml         the resolved config
      result.json         what train_sft / train_dpo return
      README.md           the model card, linking the mix's data card
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from alignmix.pipeline.store import atomic_path, write_json
from alignmix.training import evaluate as ev
from alignmix.training.config import TrainConfig
from alignmix.training.data import Prepared
from alignmix.training.metrics import MetricsCallback
from alignmix.training.modeling import compute_dtype, delta_norm, lora_state, wants_4bit


class Layout:
    def __init__(self, out_dir: str | Path):
        self.root = Path(out_dir)
        self.adapter = self.root / "adapter"
        self.merged = self.root / "merged"
        self.checkpoints = self.root / "checkpoints"
        self.metrics = self.root / "metrics.jsonl"
        self.plots = self.root / "plots"
        self.eval = self.root / "eval.json"
        self.config = self.root / "config.yaml"
        self.result = self.root / "result.json"
        self.card = self.root / "README.md"


def last_checkpoint(layout: Layout) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not layout.checkpoints.is_dir():
        return None
    return get_last_checkpoint(str(layout.checkpoints))


def trainer_kwargs(config: TrainConfig, layout: Layout) -> dict[str, Any]:
    """The TrainingArguments fields both TRL configs take. TRL's own defaults (bf16 on, gradient checkpointing
    on, logging every 10 steps) are overridden: bf16 only where the GPU has it, checkpointing when asked."""
    bf16 = compute_dtype() == torch.bfloat16
    return {
        "output_dir": str(layout.checkpoints),
        "learning_rate": config.learning_rate,
        "lr_scheduler_type": config.lr_scheduler_type,
        "warmup_steps": config.warmup_ratio,  # transformers 5: a float below 1 is a fraction of the steps
        "num_train_epochs": config.num_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "max_length": config.max_length,
        "gradient_checkpointing": config.gradient_checkpointing,
        "bf16": bf16,
        "fp16": False,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps",
        "save_steps": config.save_steps,
        "save_total_limit": config.save_total_limit,
        "seed": config.seed,
        "data_seed": config.seed,
        "report_to": "none",
        "disable_tqdm": False,
        "dataloader_num_workers": 0,
        # bitsandbytes' paged optimizer pages through CUDA unified memory: GPU only.
        "optim": "paged_adamw_8bit" if wants_4bit(config) and torch.cuda.is_available() else "adamw_torch",
    }


# Fields that may change between a run and its resumption: they do not change what the checkpoints hold.
RESUME_SAFE = {
    "max_steps", "num_epochs", "resume", "eval_rows", "generations", "max_new_tokens", "merge", "save_steps",
    "save_total_limit", "logging_steps", "warn_kl", "warn_margin_growth", "warn_chosen_logps_drop",
}


def check_resumable(config: TrainConfig, layout: Layout, kind: str) -> None:
    """Refuse to resume checkpoints written under another config (another beta, lr, LoRA rank, ...)."""
    if not config.resume or last_checkpoint(layout) is None or not layout.config.exists():
        return
    previous = (yaml.safe_load(layout.config.read_text()) or {}).get(kind, {})
    current = config.model_dump(mode="json")
    changed = [k for k in current if k not in RESUME_SAFE and previous.get(k) != current[k]]
    if changed:
        diff = ", ".join(f"{k}: {previous.get(k)!r} -> {current[k]!r}" for k in changed)
        raise ValueError(
            f"{layout.checkpoints} holds checkpoints of a run with another config ({diff}); pick another --out, "
            f"or set resume=false to start over there"
        )


def prepare_run(config: TrainConfig, layout: Layout, kind: str) -> None:
    """Check that the checkpoints here may be resumed, drop them when resume=false, write config.yaml."""
    check_resumable(config, layout, kind)
    if not config.resume and layout.checkpoints.exists():
        shutil.rmtree(layout.checkpoints)
    with atomic_path(layout.config) as tmp:
        tmp.write_text(yaml.safe_dump({kind: config.model_dump(mode="json")}, sort_keys=False))


def train_figures(trainer: Any, started: float) -> dict[str, Any]:
    """Steps, runtime and tokens/s of the run that just finished (only the steps run in this process)."""
    history = trainer.state.log_history
    summary = next((h for h in reversed(history) if "train_runtime" in h), {})
    tokens = next((h["num_tokens"] for h in reversed(history) if "num_tokens" in h), None)
    runtime = summary.get("train_runtime", time.perf_counter() - started)
    return {
        "steps": trainer.state.global_step,
        "runtime_s": round(runtime, 3),
        "train_loss": summary.get("train_loss"),
        "tokens": tokens,
        "tokens_per_s": round(tokens / runtime, 2) if tokens and runtime else None,
    }


@contextlib.contextmanager
def run_lock(layout: Layout) -> Iterator[None]:
    """One run per output folder: a second one would interleave checkpoints and metric lines."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another training run is writing to {layout.root}; wait for it or pick another --out")
        yield


def device_figures(model: Any) -> dict[str, Any]:
    """4-bit layers present and peak GPU memory (None on CPU)."""
    # bitsandbytes' own Linear4bit (peft's LoRA wrapper around it shares the class name, not the module)
    four_bit = sum(
        1 for m in model.modules() if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")
    )
    peak = round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None
    return {"linear4bit_layers": four_bit, "peak_gpu_memory_mib": peak}


def finish_run(
    kind: str,
    layout: Layout,
    config: TrainConfig,
    mix_dir: str | Path,
    base_path: str,
    policy: Any,
    tokenizer: Any,
    before: dict[str, Any],
    after: dict[str, Any],
    generations: list[dict[str, str]],
    warnings: list[dict[str, Any]],
    train: dict[str, Any],
) -> dict[str, Any]:
    """Save the adapter (and merged model on request), plot, write eval.json, the model card and result.json."""
    from alignmix.training.metrics import plot_metrics, step_records, summarize
    from alignmix.training.model_card import write_model_card
    from alignmix.training.modeling import merge_adapter

    policy.save_pretrained(layout.adapter)
    tokenizer.save_pretrained(layout.adapter)
    merged = merge_adapter(layout.adapter, layout.merged) if config.merge else None
    plots = plot_metrics(layout.metrics, layout.plots)
    result = {
        "kind": kind,
        "mix": str(Path(mix_dir)),
        "base_model": base_path,
        "out_dir": str(layout.root),
        "adapter": str(layout.adapter),
        "merged": str(merged) if merged else None,
        "metrics": str(layout.metrics),
        "plots": [str(p) for p in plots],
        "eval": {"split": "test", "before": before, "after": after},
        "generations": generations,
        "warnings": warnings,
        "train": {**train, "final": summarize(step_records(layout.metrics))},
        "config": config.model_dump(mode="json"),
        "model_card": str(layout.card),
    }
    write_model_card(layout, result, mix_dir)
    write_json(layout.eval, {"eval": result["eval"], "generations": generations})
    write_json(layout.result, result)
    return result


def train_and_finish(
    kind: str,
    trainer: Any,
    layout: Layout,
    config: TrainConfig,
    mix_dir: str | Path,
    base_path: str,
    tokenizer: Any,
    *,
    train: Prepared,
    prompts: list[list[dict[str, str]]],
    before: dict[str, Any],
    evaluate_after: Callable[[Any], dict[str, Any]],
    metrics_cb: MetricsCallback,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What SFT and DPO do once `before` is measured: generations before, train (from the last checkpoint when
    resume=true), `evaluate_after(policy)`, generations after, then finish_run. `extra` joins the train record
    after `rows_set_aside`. Returns finish_run's result."""
    policy = trainer.model
    gen_before = ev.generations_with_reference(policy, tokenizer, prompts, config.max_new_tokens)
    initial = lora_state(policy)

    resume_from = last_checkpoint(layout) if config.resume else None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    figures = train_figures(trainer, started)

    after = evaluate_after(policy)
    gen_after = ev.generate(policy, tokenizer, prompts, config.max_new_tokens)
    return finish_run(
        kind, layout, config, mix_dir, base_path, policy, tokenizer, before, after,
        generations=[{"prompt": p[-1]["content"], "before": b, "after": a}
                     for p, b, a in zip(prompts, gen_before, gen_after)],
        warnings=metrics_cb.warnings,
        train={
            **figures,
            **device_figures(policy),
            "rows": len(train.rows),
            "rows_set_aside": train.rejected_counts(),
            **(extra or {}),
            "resumed_from": resume_from,
            "adapter_delta_norm": delta_norm(initial, lora_state(policy)),
        },
    )
