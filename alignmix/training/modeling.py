"""Loading the policy (full precision on CPU, bf16 on CUDA, or 4-bit NF4 on either), the LoRA config, the
reference (the same model with its adapter disabled), sequence log-probabilities, and merging an adapter.

4-bit (QLoRA) runs wherever bitsandbytes does: on CUDA with bf16 compute, and since bitsandbytes 0.48 on CPU,
with bf16 compute where the CPU has bf16 instructions and float32 where it has not. Measured on this project's
2-core CI machine (AVX512-BF16), SmolLM2-135M, NF4 + double quant, LoRA on all linear layers, 2 x 96 tokens:
forward + backward took 3.4 s with bf16 compute against 20.6 s with float32 (`compute_dtype(four_bit=True)`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from alignmix.pipeline.models import resolve_model
from alignmix.training.config import LoraSettings, TrainConfig
from alignmix.training.lm_head import hidden_states, scored_positions, token_logps


def wants_4bit(config: TrainConfig) -> bool:
    """`quantize=4bit`: yes, on CUDA or CPU. `auto`: on CUDA only (on a CPU, 4-bit saves memory a small model
    does not need and costs time: each matmul dequantizes first)."""
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    if config.quantize == "4bit":
        if not has_bnb:
            raise RuntimeError("quantize=4bit needs bitsandbytes (an alignmix dependency): pip install bitsandbytes")
        return True
    return config.quantize == "auto" and torch.cuda.is_available() and has_bnb


def compute_dtype(four_bit: bool = False) -> torch.dtype:
    """bf16 on a GPU that has it. On CPU, float32 (CPU bf16 matmuls are slow and lossy for a 135M model),
    except for 4-bit layers on a CPU with bf16 instructions, whose bf16 dequantize-and-matmul is ~6x faster."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if four_bit and torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    return torch.float32


def device_map() -> dict[str, Any] | str:
    """Where `from_pretrained` puts the weights: the current GPU, or the CPU (bitsandbytes quantizes there too)."""
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else "cpu"


def adapter_base(folder: str | Path) -> str | None:
    """The base model an adapter folder was trained on, or None when `folder` is not an adapter."""
    cfg = Path(folder) / "adapter_config.json"
    if not cfg.exists():
        return None
    return json.loads(cfg.read_text())["base_model_name_or_path"]


def load_tokenizer(model_path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        raise ValueError(f"{model_path} has no chat template; alignmix trains chat models on conversations")
    return tokenizer


def load_policy(config: TrainConfig, work_dir: str | Path) -> tuple[Any, Any, str]:
    """(model, tokenizer, base path). A LoRA adapter folder (an SFT output) is first merged into its base and
    saved to `<work_dir>/base`, so that a following DPO run's reference (adapter disabled) is the SFT model and
    its own adapter names a base that exists on disk."""
    from transformers import AutoModelForCausalLM

    from alignmix.synth.backends.base import release_resident

    release_resident()  # a generation engine still loaded in this process (vLLM: its share of the GPU)
    path = resolve_model(config.model)
    if (Path(path) / "adapter" / "adapter_config.json").exists():
        path = str(Path(path) / "adapter")  # an alignmix output folder
    if adapter_base(path) is not None:
        merged = Path(work_dir) / "base"
        if not (merged / "config.json").exists():
            merge_adapter(path, merged)
        path = str(merged)
    four_bit = wants_4bit(config)
    kwargs: dict[str, Any] = {"dtype": compute_dtype(four_bit)}
    if four_bit or torch.cuda.is_available():
        kwargs["device_map"] = device_map()
    if four_bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(four_bit),
        )
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if four_bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    return model, load_tokenizer(path), path


def lora_config(settings: LoraSettings) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def load_init_adapter(model: Any, folder: str | Path) -> None:
    """Load a trained LoRA adapter's weights into `model`'s fresh adapter (same rank, alpha and modules), so that
    training continues from it while the reference (every adapter disabled) stays the start policy.

    Not `PeftModel.from_pretrained(..., is_trainable=True)`: TRL 1.16's DPOTrainer, given a PeftModel without a
    `peft_config`, copies its adapter into a frozen "ref" adapter, which would make the previous round's policy
    the reference instead of the start policy."""
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    saved = json.loads((Path(folder) / "adapter_config.json").read_text())
    fresh = model.peft_config["default"]
    mismatch = {k: (saved.get(k), getattr(fresh, k)) for k in ("r", "lora_alpha") if saved.get(k) != getattr(fresh, k)}
    if mismatch:
        raise ValueError(f"init_adapter {folder}: its LoRA settings differ from this run's ({mismatch}, saved vs "
                         "lora.*); train with the same lora.r and lora.alpha as the adapter")
    result = set_peft_model_state_dict(model, load_peft_weights(str(folder), device="cpu"))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if getattr(result, "unexpected_keys", None) or missing:
        raise ValueError(f"init_adapter {folder}: its weights do not fit this model's LoRA modules (unexpected "
                         f"{list(result.unexpected_keys)[:3]}, missing {missing[:3]}); use the same lora.target_modules")


@contextlib.contextmanager
def reference(model: Any) -> Iterator[Any]:
    """The reference policy: the same model with every adapter disabled (no second copy in memory)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model


def lora_state(model: Any) -> dict[str, torch.Tensor]:
    """A detached copy of the LoRA weights (to check that training changed them)."""
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if "lora_" in n}


def delta_norm(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> float:
    """The L2 norm of how far training moved the LoRA weights."""
    return round(sum(float((after[k] - before[k]).norm() ** 2) for k in after) ** 0.5, 6)


@torch.no_grad()
def completion_logps(model: Any, batch: list[dict[str, list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence (sum of completion-token log-probs, completion length) for rows of prompt_ids + completion_ids.

    Right-padded, so positions match an unpadded forward exactly. The LM head projects the completion positions
    only, a chunk at a time (lm_head.token_logps): the full (rows, length, vocab) logits are never built.
    """
    device = next(model.parameters()).device
    seqs = [r["prompt_ids"] + r["completion_ids"] for r in batch]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for i, (r, s) in enumerate(zip(batch, seqs)):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
        comp[i, len(r["prompt_ids"]) : len(s)] = 1
    ids, attn, comp = ids.to(device), attn.to(device), comp.to(device)
    scored = scored_positions(comp)
    logps = token_logps(model, hidden_states(model, ids, attn), ids, scored)
    return logps.cpu(), scored.sum(-1).float().cpu()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """Reload the adapter's base in full precision (never 4-bit: merging into NF4 is lossy), merge, save."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = adapter_base(adapter_dir)
    if base is None:
        raise ValueError(f"{adapter_dir} holds no adapter_config.json")
    dtype = torch.bfloat16 if compute_dtype() == torch.bfloat16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(resolve_model(base), dtype=dtype)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir)
    has_tokenizer = (Path(adapter_dir) / "tokenizer_config.json").exists()
    load_tokenizer(str(adapter_dir) if has_tokenizer else resolve_model(base)).save_pretrained(out_dir)
    return out_dir
