"""N responses per prompt, varied by temperature, system prompt or model (one `Responder` each).

Prompts come from prompt rows (their whole conversation, which ends with the user turn to answer), SFT rows
(the conversation up to its last user turn), preference rows (the chosen conversation minus its answer), a frame
with a `prompt` column, or plain strings. Each response is written as an
SFT row (prompt turns + the answer) whose meta records `prompt_id`, `response_index`, the responder, the model,
the sampling parameters, the seed and the finish reason; `judge` groups them back by `prompt_id`. A prompt's
`meta.ground_truth` is carried into its responses' meta. A responder with `thinking:` answers in thinking mode
(alignmix.synth.thinking): the reasoning goes to the message's `reasoning_content`, the answer to `content`, and
meta adds the token counts per part (`finish_reason: reasoning_length` for a trace cut inside its reasoning).

    >>> stats = generate_responses(["Name three rivers."], {"responders": [{"temperature": 0.3}, {"temperature": 1.0}]},
    ...                            "out/responses")                                    # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.schema import POLARS_SCHEMAS, RowError, content_id, sft_row, to_frame
from alignmix.pipeline.store import fingerprint
from alignmix.synth.backends import get_backend, request_seed
from alignmix.synth.batches import BatchStore, Timer, rejected_frame
from alignmix.synth.config import PreferencesConfig
from alignmix.synth.progress import maybe_progress
from alignmix.synth.thinking import Trace, answer

STAGE = "responses"
VERSION = "responses-v1"

PROMPT_SCHEMA = {
    "prompt_id": pl.String,
    "prompt": pl.String,
    "messages": POLARS_SCHEMAS["prompt"]["messages"],  # the row schema's messages (with reasoning_content)
    "ground_truth": pl.String,
}


def _prompt_turns(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [{"role": m["role"], "content": m["content"]} for m in messages[: last_user + 1]]


def _ground_truth(row: dict[str, Any]) -> str | None:
    """A prompt's known answer (`meta.ground_truth`, as problem generators and ingest column mappings record
    it), carried into every response's meta for `verify`; a frame of prompts (`load_prompts`' own) has it as a column."""
    if row.get("ground_truth") is not None:
        return str(row["ground_truth"])
    meta = orjson.loads(row["meta"]) if isinstance(row.get("meta"), str) and row["meta"] else {}
    truth = meta.get("ground_truth") if isinstance(meta, dict) else None
    return None if truth is None else str(truth)


def load_prompts(source: Any, limit: int | None = None) -> pl.DataFrame:
    """Prompts as a frame (prompt_id, prompt, messages): from a directory alignmix wrote (prompt, SFT or preference
    rows; prompt and SFT rows may be mixed), a frame or a list of strings. `prompt_id` is a hash of the prompt
    conversation alone, so the same prompt has the same id everywhere (a prompt row's own `id` also hashes its
    kind, so the two differ)."""
    if isinstance(source, (str, Path)):  # rows alignmix wrote as they are, any other file through ingest
        from alignmix.pipeline.inputs import read_input

        source = read_input(source).frame
    if isinstance(source, list):
        source = pl.DataFrame({"prompt": source}, schema={"prompt": pl.String})
    frame: pl.DataFrame = source
    rows = []
    for r in frame.iter_rows(named=True):
        if "messages" in frame.columns:
            turns = _prompt_turns(r["messages"])
        elif "chosen" in frame.columns:
            turns = _prompt_turns(r["chosen"])
        elif "prompt" in frame.columns:
            turns = [{"role": "user", "content": r["prompt"]}]
        else:
            raise ValueError(f"prompts need a messages, chosen or prompt column; got {frame.columns}")
        pid = content_id({"messages": turns})
        rows.append({"prompt_id": pid, "prompt": turns[-1]["content"], "messages": turns, "ground_truth": _ground_truth(r)})
    out = pl.DataFrame(rows, schema=PROMPT_SCHEMA) if rows else pl.DataFrame(schema=PROMPT_SCHEMA)
    out = out.unique("prompt_id", keep="first", maintain_order=True)
    return out.head(limit) if limit else out


def response_batch(cfg: PreferencesConfig, prompts: pl.DataFrame, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    timer = Timer()
    plan = []  # (prompt row, responder index, k, responder, response index)
    for p in prompts.iter_rows(named=True):
        index = 0
        for ri, resp in enumerate(cfg.responders):
            for k in range(resp.n):
                plan.append((p, ri, k, resp, index))
                index += 1
    results: dict[int, tuple[Trace, dict[str, Any]]] = {}
    seeds = {j: request_seed(cfg.seed, STAGE, p["prompt_id"], ri, k) for j, (p, ri, k, _, _) in enumerate(plan)}
    for ri, resp in enumerate(cfg.responders):
        backend = get_backend(resp.backend_spec())
        todo = [j for j, item in enumerate(plan) if item[1] == ri]
        system = [{"role": "system", "content": resp.system_prompt}] if resp.system_prompt else []
        traces = answer(backend, [system + plan[j][0]["messages"] for j in todo], resp.sampling(), resp.thinking,
                        [seeds[j] for j in todo], (), progress)
        for j, trace in zip(todo, traces):
            results[j] = (trace, backend.describe())
    kept, rejected, seen, tokens = [], [], set(), 0
    for j, (p, ri, k, resp, index) in enumerate(plan):
        trace, described = results[j]
        tokens += trace.completion_tokens
        meta = {
            "prompt_id": p["prompt_id"],
            "response_index": index,
            "responder": resp.display(),
            **described,
            "system_prompt": resp.system_prompt,
            "sampling": resp.sampling().model_dump(),
            "seed": seeds[j],
            "finish_reason": trace.finish_reason,
            "completion_tokens": trace.completion_tokens,
        }
        if resp.thinking is not None:
            meta.update(thinking=resp.thinking.model_dump(), **trace.meta())
        if p.get("ground_truth") is not None:
            meta["ground_truth"] = p["ground_truth"]
        sid = f"{p['prompt_id']}-{index}"
        reason = trace.rejection()
        if reason is None and (p["prompt_id"], trace.reasoning, trace.answer) in seen:
            reason = ("duplicate_response", "the same text as an earlier response to this prompt")
        if reason is None:
            try:
                kept.append(sft_row(p["messages"] + [trace.message()], source=cfg.name, source_id=sid, meta=meta))
                seen.add((p["prompt_id"], trace.reasoning, trace.answer))
                continue
            except RowError as err:
                reason = (err.reason, err.detail())
        rejected.append({
            "id": content_id({"messages": [{"role": "user", "content": f"{sid}/{trace.raw}"}]}),
            "source": cfg.name, "source_id": sid, "text": trace.raw,
            "meta": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS).decode(),
            "drop_stage": STAGE, "drop_reason": reason[0], "drop_detail": reason[1],
        })  # fmt: skip
    counters = {"seconds": timer.seconds(), "completion_tokens": tokens, "prompts": prompts.height, "requests": len(plan)}
    return to_frame(kept, "sft"), rejected_frame(rejected), counters


def generate_responses(
    prompts: Any, spec: dict[str, Any] | PreferencesConfig, out_dir: str | Path, *, progress: bool = False,
    write_data: bool = True,
) -> dict[str, Any]:
    """Responses for every prompt into `out_dir` (data/ as SFT rows unless `write_data` is False), per batch."""
    cfg = spec if isinstance(spec, PreferencesConfig) else PreferencesConfig.model_validate(spec)
    frame = load_prompts(prompts, cfg.limit)
    config = cfg.model_dump(mode="json", include={"name", "seed", "prompts_per_batch", "responders"})
    truths = frame["ground_truth"].to_list()
    fp = fingerprint(VERSION, config, frame["prompt_id"].to_list(), *([truths] if any(t is not None for t in truths) else []))
    batches = BatchStore(out_dir, STAGE, fp)
    if batches.store.is_done(STAGE, fp):
        return batches.store.read_stats(STAGE)
    per_prompt = sum(r.n for r in cfg.responders)
    with maybe_progress(f"responses {cfg.name}", frame.height * per_prompt, progress) as bar:
        for b, start in enumerate(range(0, frame.height, cfg.prompts_per_batch)):
            chunk = frame.slice(start, cfg.prompts_per_batch)
            if batches.done(b):
                bar(chunk.height * per_prompt, 0)
                continue
            batches.write(b, *response_batch(cfg, chunk, bar))
    return batches.finish("sft", {"name": cfg.name, "prompts": frame.height, "responses_per_prompt": per_prompt,
                                  "config": config}, write_data=write_data)
