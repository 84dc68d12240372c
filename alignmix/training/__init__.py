"""QLoRA SFT and DPO on a mix's shards, with metrics and a model card.

    from alignmix.training import load_config, train_sft, train_dpo
    sft = train_sft("out/sft-mix", "runs/sft", load_config("sft"))
    dpo = train_dpo("out/uf-mix", "runs/dpo", load_config("dpo", overrides={"model": "runs/sft"}))

The heavy imports (torch, transformers, trl) happen when a training function is first called.
"""

from __future__ import annotations

from typing import Any

from alignmix.training.config import DPOTrainConfig, SFTTrainConfig, TrainingSection, load_config

__all__ = ["DPOTrainConfig", "SFTTrainConfig", "TrainingSection", "beta_sweep", "load_config", "train_dpo", "train_sft"]


def train_sft(mix_dir: Any, out_dir: Any, config: SFTTrainConfig | None = None) -> dict[str, Any]:
    from alignmix.training.sft import train_sft as run

    return run(mix_dir, out_dir, config)


def train_dpo(mix_dir: Any, out_dir: Any, config: DPOTrainConfig | None = None) -> dict[str, Any]:
    from alignmix.training.dpo import train_dpo as run

    return run(mix_dir, out_dir, config)


def beta_sweep(mix_dir: Any, out_dir: Any, config: DPOTrainConfig | None = None,
               betas: tuple[float, ...] = (0.05, 0.1, 0.5)) -> dict[str, Any]:
    from alignmix.training.dpo import beta_sweep as run

    return run(mix_dir, out_dir, config, betas)
