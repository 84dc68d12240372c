"""DPO benchmark (not in CI): a longer DPO run on the default model over real UltraFeedback pairs.

Prints JSON: held-out preference accuracy before and after (the reference model, i.e. the policy before
training, is the named baseline for accuracy), and tokens/s of alignmix's DPO trainer against the stock
`trl.DPOTrainer`, run back to back with the same data, batches and settings (the baseline for throughput:
the difference is what the exact KL estimate at logging steps costs).

    .venv/bin/python bench/train.py                      # CPU defaults: ~40 steps, 256 tokens
    .venv/bin/python bench/train.py --steps 200 --max-length 1024 --batch-size 8   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from alignmix.pipeline.adapters import get_adapter  # noqa: E402
from alignmix.pipeline.schema import RowError, to_frame  # noqa: E402
from alignmix.pipeline.store import MixStore, write_json, write_shards  # noqa: E402
from alignmix.training.config import load_config  # noqa: E402

UF = ROOT.parent / "shared" / "data" / "ultrafeedback" / "eval_clean.jsonl"


def build_mix(root: Path, n_test: int) -> dict[str, int]:
    """UltraFeedback pairs through the pipeline's `pairs` adapter; score ties left out (they carry no
    preference); the last `n_test` pairs are the test split."""
    adapter, rows, ties, bad = get_adapter("pairs"), [], 0, 0
    for i, line in enumerate(UF.read_bytes().split(b"\n")):
        if not line.strip():
            continue
        rec = orjson.loads(line)
        if rec["metadata"]["score_chosen"] == rec["metadata"]["score_rejected"]:
            ties += 1
            continue
        try:
            rows += adapter.convert(rec, source="ultrafeedback", source_id=str(i))
        except RowError:
            bad += 1
    frame = to_frame(rows, "preference")
    store = MixStore(root)
    write_shards(frame.head(len(rows) - n_test), store.data_dir, "train")
    write_shards(frame.tail(n_test), store.data_dir, "test")
    write_json(store.manifest_path, {"recipe": {"name": "bench-ultrafeedback"}})
    return {"train": len(rows) - n_test, "test": n_test, "score_ties_left_out": ties, "rows_rejected": bad}


def throughput(mix: Path, cfg, steps: int, work: Path, stock: bool) -> dict[str, float]:
    """Tokens/s of `steps` DPO steps on the mix's train rows: alignmix's trainer (KL estimate at logging
    steps) or the stock trl.DPOTrainer, same data, config, batches and seed."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignmix.training.data import drop_long_prompts, preference_examples, read_split
    from alignmix.training.dpo import build_dpo_trainer
    from alignmix.training.modeling import load_policy, lora_config
    from alignmix.training.outputs import Layout, trainer_kwargs

    cfg = cfg.model_copy(update={"max_steps": steps, "save_steps": 10_000})
    model, tok, _ = load_policy(cfg, work)
    rows = drop_long_prompts(preference_examples(read_split(mix, "train", "preference")), tok, cfg.max_length).rows
    if stock:
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**trainer_kwargs(cfg, Layout(work)), beta=float(cfg.beta), loss_type=[cfg.loss]),
            train_dataset=Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]),
            processing_class=tok,
            peft_config=lora_config(cfg.lora),
        )
    else:
        trainer = build_dpo_trainer(cfg, Layout(work), model, tok, rows)
    started = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - started
    tokens = next(h["num_tokens"] for h in reversed(trainer.state.log_history) if "num_tokens" in h)
    return {"steps": steps, "runtime_s": round(runtime, 2), "tokens": tokens, "tokens_per_s": round(tokens / runtime, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--baseline-steps", type=int, default=10, help="steps of each run in the throughput pair")
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--test-rows", type=int, default=40)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from alignmix.training import train_dpo

    work = args.out or Path(tempfile.mkdtemp(prefix="alignmix-bench-train-"))
    mix = work / "mix"
    counts = build_mix(mix, args.test_rows)
    cfg = load_config("dpo", overrides={
        "max_steps": args.steps, "max_length": args.max_length, "batch_size": args.batch_size,
        "learning_rate": args.lr, "beta": args.beta, "eval_rows": args.test_rows, "logging_steps": 5,
        "save_steps": 10_000, "generations": 2, "max_new_tokens": 48,
    })
    result = train_dpo(mix, work / "dpo", cfg)
    # Throughput pair, back to back on the same machine: same steps, same batches (same seed), same logging steps.
    ours = throughput(mix, cfg, args.baseline_steps, work / "tp-alignmix", stock=False)
    stock = throughput(mix, cfg, args.baseline_steps, work / "tp-stock-trl", stock=True)
    import torch

    print(json.dumps({
        "bench": "dpo on the default model (SmolLM2-135M-Instruct), LoRA r16",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "data": {"source": "ultrafeedback eval_clean.jsonl", **counts},
        "config": {k: result["config"][k] for k in ("loss", "beta", "learning_rate", "max_steps", "batch_size",
                                                     "max_length", "quantize")},
        "heldout_preference_accuracy": {
            "baseline_reference_model": result["eval"]["before"],
            "after_dpo": result["eval"]["after"],
        },
        "tokens_per_s": {
            "main_run": result["train"]["tokens_per_s"],
            f"alignmix_dpo_{args.baseline_steps}_steps": ours["tokens_per_s"],
            f"baseline_stock_trl_dpo_{args.baseline_steps}_steps": stock["tokens_per_s"],
        },
        "train": {k: result["train"][k] for k in ("steps", "runtime_s", "tokens", "peak_gpu_memory_mib",
                                                  "rows", "rows_set_aside", "test_rows_set_aside")},
        "final_metrics": {k: result["train"]["final"].get(k) for k in
                          ("loss", "rewards/accuracies", "rewards/margins", "logps/chosen", "kl")},
        "warnings": [w["code"] for w in result["warnings"]],
        "out": str(work),
    }, indent=2))


if __name__ == "__main__":
    main()
