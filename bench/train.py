"""Training throughput and peak memory (not in CI), each figure against a named baseline in the same run.

Runs, each in its own subprocess (so that peak RSS is that run's alone), one after the other, on the default
model (SmolLM2-135M-Instruct) and the same UltraFeedback pairs, batches, LoRA and sequence lengths:

- `dpo-alignmix`: alignmix's DPO trainer at alignmix's defaults (the trainer `alignmix train dpo` builds);
- `dpo-trl`: the baseline, `trl.DPOTrainer` at TRL 1.16's own defaults (gradient checkpointing on, logging every
  10 steps, no KL), given the same model load, LoRA config, learning rate, batch, max_length, steps and seed;
  target: alignmix at least 0.9x its tokens/s and at most 1.1x its peak memory;
- `sft-alignmix`: alignmix's SFT trainer at its defaults on the chosen conversations of the same pairs;
- `sft-loop`: the baseline, a plain loop (peft LoRA model, AdamW, forward with labels, backward, step) on the
  same tokenized rows, batch size and gradient checkpointing setting;
- `dpo-cli` (with `--cli`): the whole `alignmix train dpo --max-steps N` command at the defaults, held-out
  evaluation and generations included (the figure a user waits for).

Peak memory is the process's peak RSS on CPU (`ru_maxrss`) and `torch.cuda.max_memory_allocated` on a GPU.
On a shared CPU, wall time depends on what else runs: `cpu_seconds` (user + system time of the whole run, model
load included) is printed beside it.
Tokens are the non-padding tokens of each batch (chosen + rejected for DPO), tokens/s their sum over the wall
time of `train()` (of the loop). The mix holds the UltraFeedback pairs (score ties left out) longest first, so
that every batch is full-length (padded to about max_length): the worst case a run meets, and the one the
6 GB target is about.

    .venv/bin/python bench/train.py                                  # 3 steps per run, alignmix defaults
    .venv/bin/python bench/train.py --runs dpo-alignmix --set gradient_checkpointing=false   # one choice's cost
    .venv/bin/python bench/train.py --cli --steps 2                  # and the whole command

What each default costs, measured with this script (figures in alignmix/training/config.py's docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

UF = ROOT.parent / "shared" / "data" / "ultrafeedback" / "eval_clean.jsonl"
RUNS = ("dpo-alignmix", "dpo-trl", "sft-alignmix", "sft-loop")


def build_mix(root: Path, n_test: int) -> dict[str, int]:
    """UltraFeedback pairs through the pipeline's `pairs` adapter, score ties left out (they carry no preference),
    longest pair first; the last `n_test` pairs (the shortest) are the test split."""
    from alignmix.pipeline.adapters import get_adapter
    from alignmix.pipeline.schema import RowError, to_frame
    from alignmix.pipeline.store import MixStore, write_json, write_shards

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

    def chars(row: dict) -> int:
        return max(sum(len(m["content"]) for m in row[k]) for k in ("chosen", "rejected"))

    frame = to_frame(sorted(rows, key=chars, reverse=True), "preference")
    store = MixStore(root)
    write_shards(frame.head(len(rows) - n_test), store.data_dir, "train")
    write_shards(frame.tail(n_test), store.data_dir, "test")
    write_json(store.manifest_path, {"recipe": {"name": "bench-ultrafeedback"}})
    return {"train": len(rows) - n_test, "test": n_test, "score_ties_left_out": ties, "rows_rejected": bad}


# --- the runs (each in a child process) ----------------------------------------------------------------------


def peak_memory_mib() -> float:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # kB on Linux


def _rows(kind: str, mix: Path, cfg: Any, tok: Any) -> list[dict[str, Any]]:
    from alignmix.training.data import (
        drop_long_prompts,
        preference_examples,
        read_sft_split,
        read_split,
        sft_examples,
    )

    if kind.startswith("dpo"):
        return drop_long_prompts(preference_examples(read_split(mix, "train", "preference")), tok, cfg.max_length).rows
    return sft_examples(read_sft_split(mix, "train"), tok, cfg.max_length).rows


def _stock_trl_dpo(cfg: Any, work: Path, model: Any, tok: Any, rows: list[dict[str, Any]]) -> Any:
    """trl.DPOTrainer at TRL's defaults, but for what defines the workload (and fp32 on CPU, as alignmix)."""
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignmix.training.modeling import compute_dtype, lora_config

    args = DPOConfig(
        output_dir=str(work / "checkpoints"), learning_rate=cfg.learning_rate, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.max_length, beta=float(cfg.beta),
        seed=cfg.seed, data_seed=cfg.seed, save_strategy="no", report_to="none", disable_tqdm=True,
        bf16=compute_dtype() == torch.bfloat16, dataloader_num_workers=0,
    )
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    return DPOTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                      peft_config=lora_config(cfg.lora))


def _trainer_run(kind: str, mix: Path, cfg: Any, work: Path) -> dict[str, Any]:
    from alignmix.training.dpo import build_dpo_trainer
    from alignmix.training.modeling import load_policy
    from alignmix.training.outputs import Layout
    from alignmix.training.sft import build_sft_trainer

    model, tok, _ = load_policy(cfg, work)
    rows = _rows(kind, mix, cfg, tok)
    build = {"dpo-alignmix": build_dpo_trainer, "sft-alignmix": build_sft_trainer}.get(kind)
    if build is None:
        trainer = _stock_trl_dpo(cfg, work, model, tok, rows)
    else:
        trainer = build(cfg, Layout(work), model, tok, rows, [])
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    tokens = trainer._total_train_tokens  # TRL's count: the attention mask's sum (chosen + rejected for DPO)
    return {"steps": trainer.state.global_step, "seconds": seconds, "tokens": tokens}


def _loop_run(mix: Path, cfg: Any, work: Path) -> dict[str, Any]:
    """SFT the plain way: the same model and LoRA, right-padded batches of the same rows, labels = input ids
    on the assistant mask, AdamW at the same learning rate."""
    import torch
    from peft import get_peft_model

    from alignmix.training.modeling import load_policy, lora_config

    model, tok, _ = load_policy(cfg, work)
    rows = _rows("sft", mix, cfg, tok)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(model, lora_config(cfg.lora))
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(cfg.seed)).tolist()
    device, tokens = next(model.parameters()).device, 0
    started = time.perf_counter()
    for step in range(cfg.max_steps):
        batch = [rows[i] for i in order[step * cfg.batch_size : (step + 1) * cfg.batch_size]]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        attn, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, r in enumerate(batch):
            n = len(r["input_ids"])
            ids[i, :n], attn[i, :n] = torch.tensor(r["input_ids"]), 1
            labels[i, :n] = torch.tensor(r["input_ids"]).masked_fill(torch.tensor(r["assistant_masks"]) == 0, -100)
        loss = model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=labels.to(device)).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(attn.sum())
    return {"steps": cfg.max_steps, "seconds": time.perf_counter() - started, "tokens": tokens}


def _cli_run(mix: Path, cfg: Any, work: Path, sets: list[str]) -> dict[str, Any]:
    """`alignmix train dpo --mix M --out O --max-steps N [--set ...]`, in this process."""
    from alignmix.cli import app

    args = ["train", "dpo", "--mix", str(mix), "--out", str(work / "run"), "--max-steps", str(cfg.max_steps)]
    started = time.perf_counter()
    app([*args, *[f"--set={s}" for s in sets]], standalone_mode=False)
    seconds = time.perf_counter() - started
    result = orjson.loads((work / "run" / "result.json").read_bytes())
    train = result["train"]
    return {"steps": train["steps"], "seconds": seconds, "train_seconds": train["runtime_s"],
            "tokens": train["tokens"], "command": "alignmix train dpo " + " ".join(args[2:] + sets)}


def child(spec: dict[str, Any]) -> dict[str, Any]:
    from alignmix.training.config import load_config

    kind, mix, work = spec["kind"], Path(spec["mix"]), Path(spec["work"])
    cfg = load_config("sft" if kind.startswith("sft") else "dpo", overrides=[*spec["sets"],
                      f"max_steps={spec['steps']}", "save_steps=100000"])
    if kind == "dpo-cli":
        figures = _cli_run(mix, cfg, work, spec["sets"])
    elif kind == "sft-loop":
        figures = _loop_run(mix, cfg, work)
    else:
        figures = _trainer_run(kind, mix, cfg, work)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime  # the whole process, model load included
    return {
        **figures,
        "s_per_step": round(figures["seconds"] / max(figures["steps"], 1), 2),
        "cpu_seconds": round(cpu, 1),
        "tokens_per_s": round(figures["tokens"] / figures["seconds"], 1),
        "peak_memory_mib": peak_memory_mib(),
        "seconds": round(figures["seconds"], 2),
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a fresh interpreter; its last stdout line is its JSON figures."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        return {"failed": proc.stderr[-4000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float]:
    return {"speed_x": round(ours["tokens_per_s"] / base["tokens_per_s"], 3),
            "memory_x": round(ours["peak_memory_mib"] / base["peak_memory_mib"], 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per run")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, among {', '.join(RUNS)}")
    p.add_argument("--cli", action="store_true", help="also time the whole `alignmix train dpo` command")
    p.add_argument("--set", dest="sets", action="append", default=[], help="config override for every run")
    p.add_argument("--test-rows", type=int, default=64)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    import torch

    work = args.out or Path(tempfile.mkdtemp(prefix="alignmix-bench-train-"))
    counts = build_mix(work / "mix", args.test_rows)
    runs = [r for r in args.runs.split(",") if r] + (["dpo-cli"] if args.cli else [])
    figures = {}
    for kind in runs:
        spec = {"kind": kind, "mix": str(work / "mix"), "work": str(work / kind), "steps": args.steps,
                "sets": args.sets}
        figures[kind] = run_child(spec)
        print(f"{kind}: {figures[kind]}", file=sys.stderr)
    pairs = {"dpo_alignmix_vs_trl": ("dpo-alignmix", "dpo-trl"), "sft_alignmix_vs_plain_loop": ("sft-alignmix", "sft-loop")}
    print(json.dumps({
        "bench": "training throughput and peak memory, default model (SmolLM2-135M-Instruct), LoRA r16 all-linear",
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)",
        "peak_memory": "torch.cuda.max_memory_allocated" if torch.cuda.is_available() else "peak RSS (ru_maxrss)",
        "data": {"source": "ultrafeedback eval_clean.jsonl, longest pairs first", **counts},
        "overrides": args.sets,
        "runs": figures,
        "ratios": {name: ratio(figures[a], figures[b]) for name, (a, b) in pairs.items()
                   if "tokens_per_s" in figures.get(a, {}) and "tokens_per_s" in figures.get(b, {})},
        "load_average": os.getloadavg(),
        "out": str(work),
    }, indent=2))


if __name__ == "__main__":
    main()
