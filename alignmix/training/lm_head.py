"""The LM head, the largest activation of a small model: log-probabilities and the KL from the reference over
the vocabulary, a chunk of tokens at a time, on the positions that are scored (completion tokens) only.

The (batch, length, vocab) logits of SmolLM2-135M (vocabulary 49,152) at batch 4 x 2 x 1024 tokens are 1.6 GB
in float32, and each log_softmax or KL term another 1.6 GB. Here a chunk of `CHUNK_TOKENS` positions at a time
is projected (0.1 GB), and only the positions whose next token is scored.

`lean_fused_head()` tunes TRL's own fused head (the trainers' forward: per-token log-probabilities without the
full logits) for CPUs: TRL 1.16 projects only the labelled positions on CUDA, but every position (prompt and
padding too) elsewhere, to keep tile shapes fixed for compilers (Neuron); and it projects 4,096 tokens x 32,768
vocabulary entries per tile, whose float32 temporaries (about five of them, 0.5 GB each) dominated the peak of a
CPU step. The cost of each choice is in config.py's docstring.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import torch

CHUNK_TOKENS = 512
# Vocabulary entries per tile of TRL's fused head inside lean_fused_head() (TRL's own: 32,768).
FUSED_VOCAB_CHUNK = 8192


def causal_lm(model: Any) -> Any:
    """The transformers model under a peft wrapper (its LoRA layers are inside it, so they still apply)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The backbone's last hidden state (after the final norm): what the LM head projects."""
    return causal_lm(model).base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)[0]


def head_logprobs(model: Any, hidden: torch.Tensor) -> torch.Tensor:
    """(n, hidden) -> (n, vocab) float32 log-probabilities, with the model's logit scale and soft-capping."""
    lm = causal_lm(model)
    logits = lm.get_output_embeddings()(hidden).float()
    config = lm.config.get_text_config()
    scale = getattr(config, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    cap = getattr(config, "final_logit_softcapping", None)
    if cap:
        logits = cap * torch.tanh(logits / cap)
    return logits.log_softmax(-1)


def scored_positions(completion_mask: torch.Tensor) -> torch.Tensor:
    """(rows, length - 1) bool: position t is scored when token t + 1 is a completion token."""
    return completion_mask[:, 1:].bool()


def token_logps(model: Any, hidden: torch.Tensor, input_ids: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Per-row sums of log p(token t+1 | ..t) over the scored positions."""
    h, targets = hidden[:, :-1][scored], input_ids[:, 1:][scored]
    rows = scored.nonzero()[:, 0]
    out = torch.zeros(scored.size(0), dtype=torch.float32, device=hidden.device)
    for i in range(0, h.size(0), CHUNK_TOKENS):
        lp = head_logprobs(model, h[i : i + CHUNK_TOKENS]).gather(-1, targets[i : i + CHUNK_TOKENS, None])
        out.index_add_(0, rows[i : i + CHUNK_TOKENS], lp.squeeze(-1))
    return out


def kl_sum(model: Any, policy_hidden: torch.Tensor, ref_hidden: torch.Tensor, scored: torch.Tensor,
           reference: Callable[[], AbstractContextManager[Any]]) -> float:
    """Sum over the scored positions of KL(pi || pi_ref) over the whole vocabulary, from the two forwards'
    hidden states; `reference()` opens the context in which the head is the reference's (for a LoRA'd head)."""
    pol_h, ref_h = policy_hidden[:, :-1][scored], ref_hidden[:, :-1][scored]
    total = 0.0
    for i in range(0, pol_h.size(0), CHUNK_TOKENS):
        pol = head_logprobs(model, pol_h[i : i + CHUNK_TOKENS])
        with reference():
            ref = head_logprobs(model, ref_h[i : i + CHUNK_TOKENS])
        total += float((pol.exp() * (pol - ref)).sum())
    return total


@contextlib.contextmanager
def lean_fused_head() -> Iterator[None]:
    """Inside: TRL's fused head projects only the labelled positions on every device, `FUSED_VOCAB_CHUNK`
    vocabulary entries per tile. Outside (and with a TRL that lacks these knobs): TRL's own behaviour."""
    import trl.trainer.utils as tu

    if not (hasattr(tu, "_use_triton") and hasattr(tu, "_CHUNKED_LOGPROB_CHUNK_SIZE")):
        yield
        return
    use_triton, chunk = tu._use_triton, tu._CHUNKED_LOGPROB_CHUNK_SIZE
    # `_use_triton` decides only whether the fused forward compacts to the labelled positions there; the
    # kernel module keeps its own copy, so the torch tiles still run where Triton does not.
    tu._use_triton, tu._CHUNKED_LOGPROB_CHUNK_SIZE = (lambda device: True), FUSED_VOCAB_CHUNK
    try:
        yield
    finally:
        tu._use_triton, tu._CHUNKED_LOGPROB_CHUNK_SIZE = use_triton, chunk
