"""Training configs: pydantic models whose fields carry their own help text, loadable from YAML with overrides.

    >>> cfg = load_config("dpo", overrides=["beta=0.5", "lora.r=8"])
    >>> (cfg.beta, cfg.lora.r, cfg.learning_rate, cfg.num_epochs)
    (0.5, 8, 5e-06, 1.0)

A YAML file holds the same fields (`lora:` nested); overrides are `key=value` strings with dotted keys, the
value parsed as YAML (`max_steps=20`, `loss=ipo`, `lora.target_modules=[q_proj,v_proj]`). A recipe's
`training:` section is `{sft: {...}, dpo: {...}}` of the same fields (see `TrainingSection`).

What the memory-relevant defaults cost (bench/train.py; default model, LoRA r16 on all linear layers, 4 pairs per
optimizer step, max_length 1024, UltraFeedback pairs, 2-core CPU):

- `batch_size=2, gradient_accumulation_steps=2` (4 rows a step, in two passes): DPO one step at load 1.7, 5.97 GB
  peak RSS and 137.5 s/step, against 9.36 GB and 216.5 s/step for one pass of 4 (`bench/train.py --runs
  dpo-alignmix --steps 1 [--set batch_size=2 --set gradient_accumulation_steps=2]`); activations and the attention
  and LM-head workspaces scale with the rows of one pass (why the smaller passes also ran faster was not profiled).
  A config that sets `batch_size` alone takes one pass a step, as it always did.
- `gradient_checkpointing=True`: issue 14 measured DPO at 23.9 GB peak RSS and 69 s/step without it (KL off),
  12.3 GB and 64 s/step with it: on this CPU the recomputation cost less than the memory traffic it saved.
- The KL at every logging step (`logging_steps=1`) comes from the hidden states of the step's own policy and
  reference forwards (dpo.AlignmixDPOTrainer): 18 CPU-seconds for the 5,112 completion positions of a full
  batch, against 50 for one forward of the backbone alone; before, it cost two extra full forwards with the whole
  (rows, length, vocab) logits (95 against 69 s/step, +38%).
- TRL's fused LM head scores the completion positions only, in 4,096 x 8,192 tiles (lm_head.lean_fused_head);
  held-out scoring projects completion positions only, in chunks, on length-sorted batches (evaluate.py).

Measured at these defaults, one step each on a quiet 2-core machine (load 1.6-1.9): alignmix DPO 5.83 GB peak RSS,
33.7 tokens/s, against `trl.DPOTrainer` at TRL's defaults with the same batch, accumulation, LoRA and lengths
8.71 GB, 30.4 tokens/s (0.67x the memory, 1.11x the speed): `bench/train.py --runs dpo-alignmix,dpo-trl --steps 1`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, model_validator

from alignmix.pipeline.config import StrictModel

# SimPO's own scale: the paper (Meng et al. 2024) uses beta 2.0-2.5 on length-normalized log-probabilities with
# a target margin gamma = beta * gamma_beta_ratio, ratio about 0.5. Sigmoid DPO and IPO use 0.1.
DEFAULT_BETA = {"sigmoid": 0.1, "ipo": 0.1, "simpo": 2.0}


class ConfigError(ValueError):
    """A training config that does not validate; the message names the field, the bad value and the fix."""


class _Strict(StrictModel):
    """Training settings are also set field by field (`--set key=value`), so assignments validate too."""

    model_config = ConfigDict(validate_assignment=True)  # extra="forbid" comes from StrictModel


class LoraSettings(_Strict):
    """The LoRA adapter (peft). Defaults follow common practice for small-model SFT/DPO (QLoRA paper, TRL docs)."""

    r: int = Field(16, gt=0, description="LoRA rank")
    alpha: int = Field(32, gt=0, description="LoRA alpha; the update is scaled by alpha / r (2.0 by default)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA input")
    target_modules: str | list[str] = Field(
        "all-linear", description="'all-linear' (every linear layer but the LM head, as in QLoRA) or module names"
    )


class TrainConfig(_Strict):
    """What SFT and DPO share: the model, batch shape, schedule, quantization, checkpoints and evaluation."""

    model: str = Field("default", description="'default' (SmolLM2-135M-Instruct), a Hub id, or a local folder")
    quantize: Literal["auto", "none", "4bit"] = Field(
        "auto", description="'4bit': QLoRA (bitsandbytes NF4, double quant; bf16 compute on GPU, on CPU bf16 where "
        "it has bf16 instructions, else float32); 'auto': 4bit when CUDA is available, else none"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings, description="the LoRA adapter")
    learning_rate: float = Field(2e-4, gt=0, description="peak AdamW learning rate")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="fraction of steps spent warming up")
    num_epochs: float = Field(1.0, gt=0, description="passes over the train split")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run num_epochs)")
    batch_size: int = Field(2, gt=0, description="rows per device per forward pass")
    gradient_accumulation_steps: int = Field(
        2, gt=0, description="forward passes per optimizer step, each of batch_size rows. Default: 2 when batch_size "
        "is not set either (4 rows a step in two passes of 2: on CPU 0.64x the peak memory of one pass of 4, and "
        "1.6x faster); 1 when you set batch_size, so that your batch is the step's")
    max_length: int = Field(1024, gt=8, description="tokens per sequence (prompt + completion), truncated after")
    max_train_rows: int | None = Field(None, gt=0, description="use at most this many train rows (None: all)")
    gradient_checkpointing: bool = Field(
        True, description="recompute each layer's activations in the backward pass instead of keeping them: far "
        "less memory for some more compute (see the module docstring for the measured cost)"
    )
    logging_steps: int = Field(1, gt=0, description="optimizer steps between metric lines")
    save_steps: int = Field(50, gt=0, description="optimizer steps between checkpoints (the resume points)")
    save_total_limit: int = Field(2, gt=0, description="checkpoints kept on disk")
    resume: bool = Field(True, description="resume from the last checkpoint in the output folder if there is one")
    merge: bool = Field(False, description="also write the base model with the adapter merged in, to <out>/merged")
    seed: int = Field(42, description="seed for shuffling, LoRA init and dropout")
    eval_rows: int = Field(64, ge=0, description="test rows scored before and after training (0: skip)")
    generations: int = Field(3, ge=0, description="test prompts generated from before and after training")
    max_new_tokens: int = Field(64, gt=0, description="tokens per generation (greedy)")

    @model_validator(mode="before")
    @classmethod
    def _accumulate_only_the_default_batch(cls, data: Any) -> Any:
        """A config that sets batch_size and not gradient_accumulation_steps takes one pass a step.

        >>> DPOTrainConfig().gradient_accumulation_steps, DPOTrainConfig(batch_size=8).gradient_accumulation_steps
        (2, 1)
        """
        if isinstance(data, dict) and "batch_size" in data and "gradient_accumulation_steps" not in data:
            return {**data, "gradient_accumulation_steps": 1}
        return data


class SFTTrainConfig(TrainConfig):
    """LoRA/QLoRA SFT: the chat template applied, loss on assistant tokens only."""

    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate; 2e-4 is the usual LoRA SFT rate")


class DPOTrainConfig(TrainConfig):
    """DPO on preference rows; the reference is the policy with its adapter disabled."""

    loss: Literal["sigmoid", "ipo", "simpo"] = Field(
        "sigmoid", description="'sigmoid' (DPO), 'ipo', or 'simpo' (reference-free, length-normalized, margin gamma)"
    )
    beta: float | None = Field(
        None, gt=0, description="the KL strength (DPO/IPO) or SimPO's reward scale; None: 0.1, or 2.0 for simpo"
    )
    simpo_gamma_beta_ratio: float = Field(0.5, ge=0, description="SimPO target margin gamma as a fraction of beta")
    learning_rate: float = Field(5e-6, gt=0, description="peak learning rate; about 10x below SFT's, as usual")
    init_adapter: str | None = Field(
        None, description="a LoRA adapter folder to continue training from (iterative DPO: the last round's); the "
        "reference stays `model`, the start policy. Its LoRA settings must match `lora`"
    )
    warn_kl: float = Field(10.0, gt=0, description="warn when the KL estimate from the reference exceeds this (nats)")
    warn_margin_growth: float = Field(
        0.5, gt=0, description="warn when rewards/margins grows faster than this per optimizer step"
    )
    warn_chosen_logps_drop: float = Field(
        0.25, gt=0, description="warn when logps/chosen fell by more than this fraction of its first logged value"
    )

    @model_validator(mode="after")
    def _loss_default_beta(self) -> DPOTrainConfig:
        if self.beta is None:
            object.__setattr__(self, "beta", DEFAULT_BETA[self.loss])
        return self

    @property
    def simpo_gamma(self) -> float:
        return float(self.beta) * self.simpo_gamma_beta_ratio


class TrainingSection(_Strict):
    """A recipe's `training:` section: which runs follow the mix, each with the fields above."""

    sft: SFTTrainConfig | None = Field(None, description="run SFT on the mix's SFT rows")
    dpo: DPOTrainConfig | None = Field(None, description="run DPO on the mix's preference rows")


CONFIG_CLASSES: dict[str, type[TrainConfig]] = {"sft": SFTTrainConfig, "dpo": DPOTrainConfig}


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"lora.r=8"` -> (["lora", "r"], 8): the key split on dots, the value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} has no '=': write key=value, e.g. beta=0.5 or lora.r=8")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def load_config(
    kind: Literal["sft", "dpo"],
    path: str | Path | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> SFTTrainConfig | DPOTrainConfig:
    """The config for `kind` from defaults, then the YAML file at `path`, then `overrides` (last wins)."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text())
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of config fields, got {type(loaded).__name__}")
        data = dict(loaded or {})
        if kind in data and isinstance(data[kind], dict):  # a recipe-style {sft: {...}, dpo: {...}} file
            data = data[kind]
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides or [])
    for key, value in items:
        keys = key.split(".") if isinstance(key, str) else key
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    try:
        return CONFIG_CLASSES[kind].model_validate(data)
    except ValidationError as err:
        raise ConfigError(_explain(err, kind, path)) from None


def _explain(err: ValidationError, kind: str, path: str | Path | None) -> str:
    where = f"{path}: " if path else ""
    lines = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        line = f"{where}{kind}.{field} = {e.get('input')!r}: {e['msg']}"
        if e["type"] == "extra_forbidden":
            line += f" (fix: remove it, or check its spelling against `alignmix train {kind} --help`)"
        lines.append(line)
    return "\n".join(lines)
