"""Held-out evaluation before and after training: preference accuracy of the implicit reward on the mix's
test split, the reference-free log-probability ranking, per-token NLL for SFT, and a few generations.

The implicit reward of DPO/IPO is r(x, y) = beta * (log pi(y|x) - log pi_ref(y|x)); SimPO's is
beta * log pi(y|x) / |y|. Accuracy is how often r(chosen) > r(rejected), a tie counting one half: before DPO
the policy *is* the reference, every DPO reward is 0 and the accuracy is exactly 0.5. `logp_accuracy` ranks by
length-normalized log-probability alone, so it means something before training too.

    >>> preference_metrics(ScoredPairs(torch.tensor([-10., -30.]), torch.tensor([5., 10.]),
    ...                                torch.tensor([-20., -20.]), torch.tensor([5., 10.])), None, 0.1, "simpo")
    {'pairs': 2, 'reward_accuracy': 0.5, 'reward_margin': 0.05, 'logp_accuracy': 0.5}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignmix.training.data import render, tokenize_preference
from alignmix.training.modeling import completion_logps, reference


@dataclass
class ScoredPairs:
    """Summed completion log-probs and completion lengths of each pair's chosen and rejected response."""

    chosen_logps: torch.Tensor
    chosen_lens: torch.Tensor
    rejected_logps: torch.Tensor
    rejected_lens: torch.Tensor


def tokenize_pairs(tokenizer: Any, examples: list[dict[str, Any]], max_length: int) -> list[dict[str, list[int]]]:
    return [tokenize_preference(tokenizer, ex, max_length) for ex in examples]


def score_pairs(model: Any, tokenized: list[dict[str, list[int]]], pad_id: int, batch_size: int = 8) -> ScoredPairs:
    """Scores in the order of `tokenized`; batches are formed longest first, so that little of them is padding."""
    model.eval()
    order = sorted(range(len(tokenized)), key=lambda i: -_pair_length(tokenized[i]))
    parts: dict[str, list[torch.Tensor]] = {"c": [], "cl": [], "r": [], "rl": []}
    for i in range(0, len(order), batch_size):
        chunk = [tokenized[j] for j in order[i : i + batch_size]]
        c, cl = completion_logps(model, [_pick(t, "chosen_ids") for t in chunk], pad_id)
        r, rl = completion_logps(model, [_pick(t, "rejected_ids") for t in chunk], pad_id)
        parts["c"].append(c), parts["cl"].append(cl), parts["r"].append(r), parts["rl"].append(rl)
    back = torch.tensor(order).argsort()
    cat = {k: torch.cat(v)[back] if v else torch.zeros(0) for k, v in parts.items()}
    return ScoredPairs(cat["c"], cat["cl"], cat["r"], cat["rl"])


def _pair_length(t: dict[str, list[int]]) -> int:
    return len(t["prompt_ids"]) + max(len(t["chosen_ids"]), len(t["rejected_ids"]))


def _pick(t: dict[str, list[int]], completion: str) -> dict[str, list[int]]:
    return {"prompt_ids": t["prompt_ids"], "completion_ids": t[completion]}


def preference_metrics(policy: ScoredPairs, ref: ScoredPairs | None, beta: float, loss: str) -> dict[str, float]:
    """Accuracy and mean margin of the implicit reward, and the length-normalized log-prob ranking accuracy."""
    n = len(policy.chosen_logps)
    if n == 0:
        return {"pairs": 0}
    avg_c = policy.chosen_logps / policy.chosen_lens.clamp(min=1)
    avg_r = policy.rejected_logps / policy.rejected_lens.clamp(min=1)
    if loss == "simpo":
        r_c, r_r = beta * avg_c, beta * avg_r
    else:
        assert ref is not None, "DPO/IPO rewards need the reference scores"
        r_c = beta * (policy.chosen_logps - ref.chosen_logps)
        r_r = beta * (policy.rejected_logps - ref.rejected_logps)
    return {
        "pairs": n,
        "reward_accuracy": round(_tie_half_accuracy(r_c, r_r), 6),
        "reward_margin": round(float((r_c - r_r).mean()), 6),
        "logp_accuracy": round(_tie_half_accuracy(avg_c, avg_r), 6),
    }


def _tie_half_accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a > b).float() + 0.5 * (a == b).float()).mean())


def sft_nll(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], max_length: int) -> dict[str, float]:
    """Mean per-token negative log-likelihood of each conversation's last assistant turn."""
    rows = []
    for msgs in conversations:
        pair = {"prompt": msgs[:-1], "chosen": msgs[-1:], "rejected": msgs[-1:]}
        t = tokenize_preference(tokenizer, pair, max_length)
        if t["chosen_ids"]:
            rows.append({"prompt_ids": t["prompt_ids"], "completion_ids": t["chosen_ids"]})
    if not rows:
        return {"rows": 0}
    model.eval()
    total, count = 0.0, 0.0
    for i in range(0, len(rows), 8):
        lp, n = completion_logps(model, rows[i : i + 8], tokenizer.pad_token_id)
        total += float(lp.sum())
        count += float(n.sum())
    return {"rows": len(rows), "nll_per_token": round(-total / max(count, 1.0), 6)}


@torch.no_grad()
def generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    """Greedy completions of each prompt conversation (deterministic, so before/after differ only by training)."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for msgs in prompts:
        ids = tokenizer(render(tokenizer, msgs, add_generation_prompt=True), add_special_tokens=False,
                        return_tensors="pt").to(device)
        gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(gen[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    return out


def generations_with_reference(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]],
                               max_new_tokens: int) -> list[str]:
    """Generations of the reference (the policy with its adapter disabled): the 'before' side."""
    with reference(model):
        return generate(model, tokenizer, prompts, max_new_tokens)
