"""A reward-model judge: an `AutoModelForSequenceClassification` scores each (prompt, response) in one forward
pass, and the score is the response's rating. Binarization picks the highest- and a lower-scored response as it
does with the LLM judge's ratings; a reward model gives no A/B verdict, so there is no pairwise record and the
consistency stage's position check keeps every pair (its other rules read the scores as usual).

It is meant for the public reward models of this form (read their cards for the licence and the input form):

    Skywork/Skywork-Reward-V2-Qwen3-0.6B ... -Llama-3.1-8B     input: chat      output: logits (one label)
    RLHFlow/ArmoRM-Llama3-8B-v0.1                            input: chat      output: score, trust_remote_code
    OpenAssistant/reward-model-deberta-v3-large-v2           input: pair      output: logits (one label)

Chat reward models read the conversation through their tokenizer's chat template, scored at its last token;
cross-encoders read the (question, answer) text pair. A multi-head output (ArmoRM's 19 objectives in `rewards`,
or a multi-label `logits`) is read through `output` and `head`. Sequences longer than `max_length` (default:
the model's own maximum) are truncated, and each rating records its token count and whether it was truncated.

Scoring is batched, longest first so that a batch holds sequences of similar length, with right padding: a
causal reward model pools the last token that is not padding, so a score does not depend on its batch.

    >>> judge = RewardModelJudge(RewardModelJudgeConfig(kind="reward_model", model="Skywork/Skywork-Reward-V2-Qwen3-0.6B"))  # doctest: +SKIP
    >>> judge.rate([("What is 2+2?", "4."), ("What is 2+2?", "5.")])[0][0].rating                  # doctest: +SKIP
    3.171875
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from alignmix.synth.backends.base import (
    GenerationRequest,
    GenerationResult,
    LocalModelBackend,
    ProgressFn,
)
from alignmix.synth.config import RewardModelJudgeConfig

Conversation = list[dict[str, str]]
# Above this a tokenizer's model_max_length is transformers' "no limit" sentinel, not the model's length.
_NO_LIMIT = 1_000_000


@dataclass
class Reward:
    """One response's reward: its score (None when the model returned no finite number), its token count before
    truncation, and whether it was truncated. Shaped like the LLM judge's `Judgement` where binarization reads it."""

    score: float | None
    tokens: int
    truncated: bool

    @property
    def rating(self) -> float | None:
        return self.score

    @property
    def parsed(self) -> bool:
        return self.score is not None

    def to_dict(self) -> dict[str, Any]:
        return {"rating": self.score, "ratings": {"reward": self.score}, "rationales": {"reward": None}, "raw": {},
                "parsed": self.parsed, "rating_mode": "reward_model", "tokens": self.tokens,
                "truncated": self.truncated}  # fmt: skip


class RewardModel(LocalModelBackend):
    """The reward model's weights and tokenizer, loaded like a generation backend (one local model at a time)."""

    name = "reward_model"

    def __init__(self, cfg: RewardModelJudgeConfig):
        super().__init__(cfg.model, tokenizer=cfg.tokenizer, batch_size=cfg.batch_size, dtype=cfg.dtype,
                         trust_remote_code=cfg.trust_remote_code)  # fmt: skip
        self.cfg = cfg
        self.rm: Any = None
        self.device = cfg.device
        self._settings: dict[str, Any] | None = None

    def settings(self) -> dict[str, Any]:
        """{"input": chat | pair, "max_length": n}, read from the tokenizer and config (no weights loaded)."""
        if self._settings is None:
            from transformers import AutoConfig, AutoTokenizer

            from alignmix.pipeline.models import resolve_model

            path = resolve_model(self.model)
            tokenizer = AutoTokenizer.from_pretrained(
                self.tokenizer_path(path), trust_remote_code=self.trust_remote_code
            )
            config = AutoConfig.from_pretrained(path, trust_remote_code=self.trust_remote_code)
            mode = self.cfg.input
            if mode == "auto":
                mode = "chat" if tokenizer.chat_template else "pair"
            elif mode == "chat" and not tokenizer.chat_template:
                raise ValueError(f"judge.input: chat, but the tokenizer of {self.model!r} has no chat template: use "
                                 "input: pair (a cross-encoder), or give `tokenizer:` with a template")  # fmt: skip
            limit = tokenizer.model_max_length if tokenizer.model_max_length < _NO_LIMIT else None
            limit = limit or getattr(config, "max_position_embeddings", None) or 512
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "right"  # causal RMs pool the last non-pad token; positions start at 0
            self.tokenizer = tokenizer
            self._settings = {"input": mode, "max_length": self.cfg.max_length or limit}
        return self._settings

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        from alignmix.pipeline.models import resolve_model

        self.settings()
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {
            "auto": "auto",
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[self.dtype]
        if dtype == "auto" and device == "cpu":
            dtype = torch.float32
        rm = AutoModelForSequenceClassification.from_pretrained(
            resolve_model(self.model),
            dtype=dtype,
            trust_remote_code=self.trust_remote_code,
        )
        if rm.config.pad_token_id is None:
            rm.config.pad_token_id = self.tokenizer.pad_token_id
        self.rm = rm.to(device).eval()
        self.device = device

    def _release(self) -> None:
        self.rm = None

    def _generate(self, requests: list[GenerationRequest], progress: ProgressFn | None) -> list[GenerationResult]:
        raise TypeError(f"{self.model!r} is a reward model: it scores responses and does not generate")

    def chat_template(self) -> str | None:
        self.settings()
        return self.tokenizer.chat_template

    def special_tokens(self) -> dict[str, str]:
        from alignmix.synth.backends.base import tokenizer_special_tokens

        self.settings()
        return tokenizer_special_tokens(self.tokenizer)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "model": self.model, "output": self.cfg.output, "head": self.cfg.head,
                **self.settings()}  # fmt: skip

    def encode(self, conversation: Conversation) -> tuple[dict[str, list[int]], int]:
        """The model inputs for a conversation that ends with the answer, truncated to max_length, and the token
        count before truncation. Chat: the whole conversation through the chat template (which carries the
        special tokens the model was trained with). Pair: (the last user turn, the answer) as a text pair."""
        s = self.settings()
        limit = s["max_length"]
        if s["input"] == "chat":
            text = self.tokenizer.apply_chat_template(conversation, tokenize=False)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            return {"input_ids": ids[:limit]}, len(ids)
        question = next(
            (m["content"] for m in reversed(conversation[:-1]) if m["role"] == "user"),
            "",
        )
        full = dict(self.tokenizer(question, conversation[-1]["content"]))
        n = len(full["input_ids"])
        if n > limit:
            full = dict(
                self.tokenizer(
                    question,
                    conversation[-1]["content"],
                    truncation="longest_first",
                    max_length=limit,
                )
            )
        return full, n

    def score(self, conversations: list[Conversation], progress: ProgressFn | None = None) -> list[Reward]:
        """The reward of each conversation's last turn, in the order given."""
        with self.loaded():
            return self._score(conversations, progress)

    def _score(self, conversations: list[Conversation], progress: ProgressFn | None) -> list[Reward]:
        import torch

        encoded = [self.encode(c) for c in conversations]
        limit = self.settings()["max_length"]
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]["input_ids"]))
        scores: dict[int, float | None] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.cfg.batch_size):
                chunk = order[start : start + self.cfg.batch_size]
                batch = self.tokenizer.pad([encoded[i][0] for i in chunk], return_tensors="pt").to(self.device)
                values = self._read(self.rm(**batch), len(chunk))
                scores.update(zip(chunk, values))
                if progress:
                    progress(len(chunk), 0)
        return [Reward(scores[i], n, n > limit) for i, (_, n) in enumerate(encoded)]

    def _read(self, output: Any, rows: int) -> list[float | None]:
        """The `output` field's `head` column per row, rounded to 6 decimals; None where it is not finite."""
        value = getattr(output, self.cfg.output, None)
        if value is None:
            have = list(output.keys()) if hasattr(output, "keys") else sorted(vars(output))
            raise ValueError(f"judge.output: {self.model!r} returned no {self.cfg.output!r} (it has {have}); "
                             "set output to one of those")  # fmt: skip
        value = value.float().reshape(rows, -1)
        if self.cfg.head >= value.shape[1]:
            raise ValueError(f"judge.head = {self.cfg.head}, but {self.cfg.output!r} has {value.shape[1]} column(s): "
                             f"use a head below {value.shape[1]}")  # fmt: skip
        return [round(v, 6) if math.isfinite(v) else None for v in value[:, self.cfg.head].tolist()]


class RewardModelJudge:
    """The judge interface (`rate`, `outcomes`, `describe`) over a reward model; see `alignmix.synth.judge`."""

    per_response = 1  # forward passes per rated response (the LLM judge makes one request per aspect)

    def __init__(self, cfg: RewardModelJudgeConfig, model: RewardModel | None = None):
        self.cfg = cfg
        self.backend = model or RewardModel(cfg)

    def rate(self, items: list[tuple[str, str]], progress: ProgressFn | None = None) -> tuple[list[Reward], int]:
        """Rewards for (instruction, response) pairs, and the completion tokens spent (none: nothing is generated)."""
        return self.rate_conversations([_turns(i, r) for i, r in items], progress)

    def rate_conversations(
        self, conversations: list[Conversation], progress: ProgressFn | None = None
    ) -> tuple[list[Reward], int]:
        """Rewards of each conversation's last turn, all its turns read (a chat RM sees the whole conversation)."""
        return self.backend.score(conversations, progress), 0

    def outcomes(self, items: list[tuple[str, str, str]], progress: ProgressFn | None = None) -> list[float]:
        """For (instruction, a, b): 1.0 when a scores higher, 0.0 when b does, 0.5 for a tie or a missing score.
        Equal answers tie without scoring: in a padded batch the same text can score a few ulps apart."""
        differ = [k for k, (_, a, b) in enumerate(items) if a != b]
        rewards = self.backend.score([_turns(items[k][0], x) for k in differ for x in items[k][1:]], progress)
        out = [0.5] * len(items)
        for n, k in enumerate(differ):
            out[k] = _compare(rewards[2 * n].score, rewards[2 * n + 1].score)
        return out

    def describe(self) -> dict[str, Any]:
        return self.backend.describe()


def _turns(instruction: str, response: str) -> Conversation:
    return [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": response},
    ]


def _compare(a: float | None, b: float | None) -> float:
    if a is None or b is None or a == b:
        return 0.5
    return 1.0 if a > b else 0.0
