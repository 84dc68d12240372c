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


def generate_batch(
    cfg: MagpieConfig, backend: Backend, fmt: ChatFormat, batch: int, n: int, progress=None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """One batch of `n` MAGPIE conversations: (kept SFT rows, rejected generations, counters)."""
    timer = Timer()
    rng = random.Random(request_seed(cfg.seed, STAGE, "system", batch))
    systems = [_pick_system(cfg, rng) for _ in range(n)]
    turns: list[list[dict[str, str]]] = [[] for _ in range(n)]
    metas: list[dict[str, Any]] = [{"seeds": [], "finish": []} for _ in range(n)]
    failed: dict[int, tuple[str, str, str]] = {}  # request -> (reason, detail, raw text)
    stopped: dict[int, str] = {}  # multi-turn conversations that ended early keep their finished turns
    tokens = 0
    for turn in range(cfg.n_turns):
        alive = [i for i in range(n) if i not in failed and i not in stopped]
        if not alive:
            break
        seeds = {i: request_seed(cfg.seed, STAGE, batch, i, turn, "instruction") for i in alive}
        reqs = [
            GenerationRequest(
                prompt=fmt.pre_query(turns[i], systems[i]),
                params=cfg.instruction.params(fmt.instruction_stops, seeds[i]),
            )
            for i in alive
        ]
        results = backend.generate(reqs, progress)
        asking = []
        for i, res in zip(alive, results):
            tokens += res.completion_tokens
            text = res.text.strip()
            metas[i]["seeds"].append(seeds[i])
            reason = None
            if res.finish_reason == "length":
                reason, detail = "truncated_instruction", f"turn {turn}: no end-of-turn within {cfg.instruction.max_new_tokens} tokens"
            elif len(text) < cfg.min_instruction_chars:
                reason, detail = "empty_instruction", f"turn {turn}: {len(text)} characters after stripping"
            if reason is None:
                turns[i].append({"role": "user", "content": text})
                asking.append(i)
            elif turn == 0:
                failed[i] = (reason, detail, res.text)
            else:
                stopped[i] = reason
        if not asking:
            continue
        seeds_r = {i: request_seed(cfg.seed, STAGE, batch, i, turn, "response") for i in asking}
        reqs = [
            GenerationRequest(
                messages=([{"role": "system", "content": systems[i]}] if systems[i] else []) + turns[i],
                params=cfg.response.params(fmt.response_stops, seeds_r[i]),
            )
            for i in asking
        ]
        for i, res in zip(asking, backend.generate(reqs, progress)):
            tokens += res.completion_tokens
            text = res.text.strip()
            metas[i]["seeds"].append(seeds_r[i])
            metas[i]["finish"].append(res.finish_reason)
            reason = "truncated_response" if res.finish_reason == "length" else "empty_response" if not text else None
            if reason is None:
                turns[i].append({"role": "assistant", "content": text})
            else:
                question = turns[i].pop()["content"]  # the unanswered user turn goes
                metas[i]["response_raw"] = res.text
                if turn == 0:
                    failed[i] = (reason, f"turn {turn}: {res.completion_tokens} tokens", question)
                else:
                    stopped[i] = reason
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
    kept, rejected = [], []
    for i in range(n):
        source_id = f"{batch:05d}-{i:04d}"
        meta = {**common, **metas[i], "system_prompt": systems[i], "n_turns": sum(m["role"] == "user" for m in turns[i])}
        if i in stopped:
            meta["ended_early"] = stopped[i]
        if i in failed:
            reason, detail, raw = failed[i]
            rejected.append(_rejected(cfg.name, source_id, raw, meta, reason, detail))
            continue
        messages = ([{"role": "system", "content": systems[i]}] if systems[i] else []) + turns[i]
        try:
            kept.append(sft_row(messages, source=cfg.name, source_id=source_id, meta=meta))
        except RowError as err:
            rejected.append(_rejected(cfg.name, source_id, str(turns[i]), meta, err.reason, err.detail()))
    counters = {"seconds": timer.seconds(), "completion_tokens": tokens, "requests": n}
    return to_frame(kept, "sft"), rejected_frame(rejected), counters


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
