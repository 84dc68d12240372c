"""The model card: a Hub model-card YAML header and a body with the data (linking the mix's data card), the
config, held-out figures before and after, generations, warnings and the metric plots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from alignmix.pipeline.store import MixStore, atomic_path


def _mix_facts(mix_dir: Path) -> dict[str, Any]:
    try:
        manifest = MixStore(mix_dir).read_manifest()
    except (FileNotFoundError, ValueError):
        return {}
    recipe = manifest.get("recipe") if isinstance(manifest.get("recipe"), dict) else {}
    return {"name": recipe.get("name") or manifest.get("name"), "recipe_hash": manifest.get("recipe_hash")}


def render_model_card(result: dict[str, Any], mix_dir: str | Path, card_dir: str | Path) -> str:
    mix_dir, card_dir = Path(mix_dir).resolve(), Path(card_dir).resolve()
    data_card = mix_dir / "README.md"
    link = os.path.relpath(data_card, card_dir)
    facts = _mix_facts(mix_dir)
    kind, cfg = result["kind"], result["config"]
    header = {
        "library_name": "peft",
        "base_model": result["base_model"],
        "pipeline_tag": "text-generation",
        "tags": ["alignmix", "trl", kind, "lora" if cfg["quantize"] != "4bit" else "qlora"],
    }
    if kind == "sft":
        method = "SFT, loss on the assistant tokens only"
    else:
        method = f"DPO, {cfg['loss']} loss, beta {cfg['beta']}; reference = the base with the adapter disabled"
    recipe = f" (recipe `{facts['name']}`, hash `{str(facts.get('recipe_hash'))[:12]}`)" if facts.get("name") else ""
    card_link = f"its data card: [{link}]({link})" if data_card.exists() else f"no data card at [{link}]({link})"
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False).strip(),
        "---",
        "",
        f"# {Path(result['out_dir']).name}: a LoRA adapter trained by alignmix ({kind.upper()})",
        "",
        f"- **Method**: {method}",
        f"- **Base model**: `{result['base_model']}`",
        f"- **Data**: the mix at `{mix_dir}`{recipe}; {card_link}",
        f"- **Train rows**: {result['train']['rows']}"
        + (f" (set aside: {result['train']['rows_set_aside']})" if result["train"]["rows_set_aside"] else ""),
        f"- **Steps**: {result['train']['steps']}, {result['train']['runtime_s']} s"
        + (f", {result['train']['tokens_per_s']} tokens/s" if result["train"].get("tokens_per_s") else ""),
        "",
        "## Configuration",
        "",
        "| field | value |",
        "|---|---|",
    ]
    for k, v in cfg.items():
        lines.append(f"| {k} | `{v}` |")
    before, after = result["eval"]["before"], result["eval"]["after"]
    lines += ["", "## Held-out evaluation (test split)", "", "| metric | before | after |", "|---|---|---|"]
    for k in before:
        lines.append(f"| {k} | {before[k]} | {after.get(k)} |")
    if kind == "dpo":
        lines += ["", "reward_accuracy: how often the implicit reward ranks chosen above rejected (ties count 1/2; "
                  "exactly 0.5 before DPO, when policy = reference). logp_accuracy: the same by length-normalized "
                  "log-probability."]
    if result["generations"]:
        lines += ["", "## Generations (greedy)", ""]
        for g in result["generations"]:
            lines += [f"**Prompt**: {_quote(g['prompt'])}", "", f"- before: {_quote(g['before'])}",
                      f"- after: {_quote(g['after'])}", ""]
    lines += ["", "## Warnings", ""]
    lines += [f"- step {w['step']}: `{w['code']}`: {w['message']}" for w in result["warnings"]] or ["none"]
    if result["plots"]:
        lines += ["", "## Training metrics", ""]
        lines += [f"![{Path(p).stem}]({os.path.relpath(p, card_dir)})" for p in result["plots"]]
    lines += ["", "Load: `peft.AutoPeftModelForCausalLM.from_pretrained(\"<this folder>/adapter\")`", ""]
    return "\n".join(lines)


def _quote(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " …"


def write_model_card(layout: Any, result: dict[str, Any], mix_dir: str | Path) -> Path:
    text = render_model_card(result, mix_dir, layout.root)
    with atomic_path(layout.card) as tmp:
        tmp.write_text(text)
    return layout.card
