"""MAGPIE (Xu et al. 2024): an aligned model, given only the prefix of a user turn (the pre-query template),
writes a user query from its own prior; the same model then answers it.

    >>> stats = run_magpie({"name": "magpie-demo", "count": 4}, "out/magpie")        # doctest: +SKIP
    >>> stats["rows_kept"], stats["dropped"]
    (3, {'truncated_instruction': 1})

Each request has its own seed (request_seed(run seed, batch, request, turn)): one shared seed would make every
sample of a batch identical. Instructions are cut at the end-of-turn marker or the start of another turn, then
stripped; empty and truncated ones are rejected with their reason. Rows record the model, the template and the
sampling parameters in `meta`. Written per batch under <out>/batches/magpie/, so a killed run resumes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.schema import RowError, content_id, sft_row, to_frame
from alignmix.pipeline.store import fingerprint
from alignmix.synth.backends import Backend, GenerationRequest, get_backend, request_seed
from alignmix.synth.batches import BatchStore, Timer, rejected_frame
from alignmix.synth.config import MagpieConfig, parse_generator
from alignmix.synth.progress import maybe_progress
from alignmix.synth.templates import PRESETS, derive_pre_query_template, turn_markers
from alignmix.synth.thinking import answer

STAGE = "magpie"
VERSION = "magpie-v1"  # bump when the generation logic changes what a config produces


@dataclass
class ChatFormat:
    """How a model's turns are written: from its own chat template (`auto`) or a known preset."""

    source: str
    template: str | None
    special_tokens: dict[str, str]
    instruction_stops: tuple[str, ...]
    response_stops: tuple[str, ...]
    preset_prefix: str | None = None
    _cache: dict = field(default_factory=dict)

    def pre_query(self, history: list[dict[str, str]] | None = None, system_prompt: str | None = None) -> str:
        history = history or []
        if self.template is None:
            if history or system_prompt:
                raise ValueError(
                    f"the {self.source} preset covers the first turn without a system prompt only; multi-turn "
                    "MAGPIE and system prompts need the model's chat template (give `tokenizer:`)"
                )
            return self.preset_prefix  # type: ignore[return-value]
        key = (tuple((m["role"], m["content"]) for m in history), system_prompt)
        if key not in self._cache:
            self._cache[key] = derive_pre_query_template(self.template, history, system_prompt, **self.special_tokens)
        return self._cache[key]


def chat_format(backend: Backend, template: str = "auto") -> ChatFormat:
    """The pre-query template and stop strings for `backend`'s model: derived, or from `PRESETS[template]`."""
    if template != "auto":
        if template not in PRESETS:
            raise ValueError(f"template {template!r} is neither 'auto' nor a preset ({', '.join(sorted(PRESETS))})")
        p = PRESETS[template]
        chat = backend.chat_template()
        eos = (backend.special_tokens().get("eos_token") if chat else None) or p.special_tokens["eos_token"]
        stops = tuple(dict.fromkeys([*p.stop, eos]))
        return ChatFormat(f"preset:{template}", None, dict(p.special_tokens), stops, stops, preset_prefix=p.pre_query_template)
    chat = backend.chat_template()
    if chat is None:
        raise ValueError(
            f"{backend.model!r} through the {backend.name} backend has no chat template to derive the pre-query "
            f"template from: give `tokenizer:` or a `template:` preset ({', '.join(sorted(PRESETS))})"
        )
    special = backend.special_tokens()
    markers = turn_markers(chat, **special)
    eos = special.get("eos_token")
    extra = (eos,) if eos else ()
    return ChatFormat(
        "derived",
        chat,
        special,
        tuple(dict.fromkeys(markers.instruction_stops() + extra)),
        tuple(dict.fromkeys(markers.response_stops() + extra)),
    )


def _pick_system(cfg: MagpieConfig, rng: random.Random) -> str | None:
    if not cfg.system_prompts:
        return None
    choice = rng.choices(cfg.system_prompts, weights=[s.weight for s in cfg.system_prompts])[0]
    return choice.text or None


@dataclass
class Conversation:
    """One MAGPIE conversation as it is built, turn by turn: what it has so far and how it ended."""

    index: int
    system: str | None
    turns: list[dict[str, Any]] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    finish: list[str] = field(default_factory=list)
    thinking: list[dict[str, Any]] = field(default_factory=list)  # per answered turn, in thinking mode
    failed: tuple[str, str, str] | None = None  # (reason, detail, raw text): nothing usable, the row is rejected
    stopped: str | None = None  # a multi-turn conversation that ended early keeps its finished turns
    response_raw: str | None = None

    @property
    def alive(self) -> bool:
        return self.failed is None and self.stopped is None

    def messages(self) -> list[dict[str, Any]]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def end(self, turn: int, reason: str, detail: str, raw: str) -> None:
        """The turn failed: the first turn rejects the conversation, a later one ends it early."""
        if turn == 0:
            self.failed = (reason, detail, raw)
        else:
            self.stopped = reason

    def meta(self, common: dict[str, Any]) -> dict[str, Any]:
        meta = {**common, "seeds": self.seeds, "finish": self.finish, "system_prompt": self.system,
                "n_turns": sum(m["role"] == "user" for m in self.turns)}
        if self.thinking:
            meta["thinking_turns"] = self.thinking
        if self.response_raw is not None:
            meta["response_raw"] = self.response_raw
        if self.stopped:
            meta["ended_early"] = self.stopped
        return meta


def generate_batch(
    cfg: MagpieConfig, backend: Backend, fmt: ChatFormat, batch: int, n: int, progress=None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """One batch of `n` MAGPIE conversations: (kept SFT rows, rejected generations, counters)."""
    timer = Timer()
    rng = random.Random(request_seed(cfg.seed, STAGE, "system", batch))
    convs = [Conversation(i, _pick_system(cfg, rng)) for i in range(n)]
    tokens = 0
    for turn in range(cfg.n_turns):
        alive = [c for c in convs if c.alive]
        if not alive:
            break
        tokens += _ask(cfg, backend, fmt, batch, turn, alive, progress)
        asking = [c for c in alive if c.alive and len(c.turns) % 2 == 1]
        tokens += _answer(cfg, backend, fmt, batch, turn, asking, progress)
    common = {
        "generator": "magpie",
        **backend.describe(),
        "template": fmt.source,
        "pre_query_template": fmt.pre_query([], None),
        "instruction_sampling": cfg.instruction.model_dump(),
        "response_sampling": cfg.response.model_dump(),
        "instruction_stop": list(fmt.instruction_stops),
        "run_seed": cfg.seed,
    }
    if cfg.thinking is not None:
        common["thinking"] = cfg.thinking.model_dump()
    kept, rejected = [], []
    for c in convs:
        source_id = f"{batch:05d}-{c.index:04d}"
        meta = c.meta(common)
        if c.failed:
            reason, detail, raw = c.failed
            rejected.append(_rejected(cfg.name, source_id, raw, meta, reason, detail))
            continue
        try:
            kept.append(sft_row(c.messages(), source=cfg.name, source_id=source_id, meta=meta))
        except RowError as err:
            rejected.append(_rejected(cfg.name, source_id, str(c.turns), meta, err.reason, err.detail()))
    counters = {"seconds": timer.seconds(), "completion_tokens": tokens, "requests": n}
    return to_frame(kept, "sft"), rejected_frame(rejected), counters


def _ask(cfg: MagpieConfig, backend: Backend, fmt: ChatFormat, batch: int, turn: int, convs: list[Conversation],
         progress) -> int:
    """Each conversation's next user query, from the pre-query template alone; returns the tokens spent."""
    seeds = [request_seed(cfg.seed, STAGE, batch, c.index, turn, "instruction") for c in convs]
    reqs = [GenerationRequest(prompt=fmt.pre_query(c.turns, c.system), params=cfg.instruction.params(fmt.instruction_stops, seed))
            for c, seed in zip(convs, seeds)]  # fmt: skip
    tokens = 0
    for c, seed, res in zip(convs, seeds, backend.generate(reqs, progress)):
        tokens += res.completion_tokens
        text = res.text.strip()
        c.seeds.append(seed)
        if res.finish_reason == "length":
            c.end(turn, "truncated_instruction", f"turn {turn}: no end-of-turn within {cfg.instruction.max_new_tokens} tokens", res.text)
        elif len(text) < cfg.min_instruction_chars:
            c.end(turn, "empty_instruction", f"turn {turn}: {len(text)} characters after stripping", res.text)
        else:
            c.turns.append({"role": "user", "content": text})
    return tokens


def _answer(cfg: MagpieConfig, backend: Backend, fmt: ChatFormat, batch: int, turn: int, convs: list[Conversation],
            progress) -> int:
    """Each conversation's answer to its new query (in thinking mode with `cfg.thinking`); returns the tokens."""
    seeds = [request_seed(cfg.seed, STAGE, batch, c.index, turn, "response") for c in convs]
    traces = answer(backend, [c.messages() for c in convs], cfg.response, cfg.thinking, seeds, fmt.response_stops, progress)
    tokens = 0
    for c, seed, trace in zip(convs, seeds, traces):
        tokens += trace.completion_tokens
        c.seeds.append(seed)
        c.finish.append(trace.finish_reason)
        if cfg.thinking is not None:
            c.thinking.append(trace.meta())
        problem = ("truncated_response", "") if trace.finish_reason == "length" else trace.rejection()
        if problem is None:
            c.turns.append(trace.message() if cfg.thinking is not None else {"role": "assistant", "content": trace.answer})
            continue
        question = c.turns.pop()["content"]  # the unanswered user turn goes
        c.response_raw = trace.raw
        c.end(turn, problem[0], f"turn {turn}: {trace.completion_tokens} tokens" + (f"; {problem[1]}" if problem[1] else ""),
              question)
    return tokens


def _rejected(source: str, source_id: str, text: str, meta: dict, reason: str, detail: str) -> dict[str, Any]:
    return {
        "id": content_id({"messages": [{"role": "user", "content": f"{source}/{source_id}/{text}"}]}),
        "source": source,
        "source_id": source_id,
        "text": text,
        "meta": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode(),
        "drop_stage": STAGE,
        "drop_reason": reason,
        "drop_detail": detail,
    }


def run_magpie(
    spec: dict[str, Any] | MagpieConfig,
    out_dir: str | Path,
    *,
    backend: Backend | None = None,
    progress: bool = False,
    rows_per_shard: int = 100_000,
) -> dict[str, Any]:
    """Generate `count` MAGPIE conversations into `out_dir` (data/, rejected/magpie.parquet, stats/magpie.json).

    Finished batches are skipped on rerun; a finished stage with the same config returns its stats at once."""
    cfg = spec if isinstance(spec, MagpieConfig) else parse_generator({"kind": "magpie", **spec})
    assert isinstance(cfg, MagpieConfig)
    fp = fingerprint(VERSION, cfg.model_dump(mode="json"))
    batches = BatchStore(out_dir, STAGE, fp)
    if batches.store.is_done(STAGE, fp):
        return batches.store.read_stats(STAGE)
    backend = backend or get_backend(cfg.backend_spec())
    fmt = chat_format(backend, cfg.template)
    sizes = [min(cfg.requests_per_batch, cfg.count - s) for s in range(0, cfg.count, cfg.requests_per_batch)]
    # Each conversation is 2 requests per turn (query, answer): the bar counts requests.
    with maybe_progress(f"magpie {cfg.name}", 2 * cfg.n_turns * cfg.count, progress) as bar:
        for b, n in enumerate(sizes):
            if batches.done(b):
                bar(2 * cfg.n_turns * n, 0)
                continue
            kept, rejected, counters = generate_batch(cfg, backend, fmt, b, n, bar)
            batches.write(b, kept, rejected, counters)
    return batches.finish("sft", {"generator": "magpie", "name": cfg.name, "config": cfg.model_dump(mode="json"),
                                  **backend.describe(), "template": fmt.source}, rows_per_shard)
