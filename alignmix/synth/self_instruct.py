"""Self-Instruct (Wang et al. 2023): new instructions bootstrapped from seed tasks and the model's own output.

Each request shows the model 8 tasks (6 from the seed set, 2 it generated earlier, once there are some) and lets
it continue the list. New instructions pass the paper's filters in order, each drop with its reason:

    empty_instruction       nothing left after cleaning
    instruction_length      <= 3 or > 150 words
    keyword_filtered        a task a text model cannot do (image, graph, file, draw, ...) or "Write a program"
    bad_start               starts with punctuation or a non-ASCII character
    truncated_instruction   cut by the token limit
    rouge_similar           ROUGE-L > 0.7 against a kept instruction (seed or generated)
    truncated_instance, instance_unparseable, empty_output, empty_input
                            the instance could not be read off the model's continuation
    count_reached           a complete row made after the target count was reached

Kept instructions are labelled classification or not (few-shot, from the seed labels) and get an instance:
input-first for ordinary tasks, output-first (class label, then input) for classification tasks, as the
paper does to keep labels balanced. Each kept instruction becomes an SFT row (user: instruction + input,
assistant: output). Written per batch, resumable: the ROUGE filter is rebuilt from the finished batches.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from alignmix.pipeline.schema import RowError, content_id, sft_row, to_frame
from alignmix.pipeline.store import fingerprint, sha256_file
from alignmix.synth.backends import Backend, GenerationRequest, SamplingParams, get_backend, request_seed
from alignmix.synth.batches import BatchStore, Timer, rejected_frame
from alignmix.synth.config import SelfInstructConfig, default_seed_tasks, parse_generator
from alignmix.synth.progress import maybe_progress
from alignmix.synth.rouge import RougeFilter

STAGE = "self_instruct"
VERSION = "self-instruct-v1"
TASK_HEADER = "Come up with a series of tasks:"
CLASSIFY_HEADER = "Can the following task be regarded as a classification task with finite output labels?"
INSTANCE_HEADER = (
    "Come up with examples for the following tasks. If the task does not need an input, write None as the input."
)
CLASS_INSTANCE_HEADER = "Given the classification task definition and a class label, generate an input with that label."


@dataclass(frozen=True)
class SeedTask:
    id: str
    name: str
    instruction: str
    instances: tuple[tuple[str, str], ...]
    is_classification: bool


def load_seed_tasks(path: str | Path | None = None) -> list[SeedTask]:
    """Seed tasks in the reference JSON Lines format (id, name, instruction, instances [{input, output}],
    is_classification). Errors name the file, the line and the field."""
    path = Path(path) if path else default_seed_tasks()
    tasks = []
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            d = orjson.loads(line)
        except orjson.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: not valid JSON ({err})") from None
        for key, typ in (("instruction", str), ("instances", list), ("is_classification", bool)):
            if not isinstance(d.get(key), typ):
                raise ValueError(f"{path}:{n}: field {key!r} must be a {typ.__name__}, got {d.get(key)!r}")
        instances = tuple((str(i.get("input", "")), str(i.get("output", ""))) for i in d["instances"])
        if not instances:
            raise ValueError(f"{path}:{n}: field 'instances' is empty; give at least one {{input, output}}")
        tasks.append(SeedTask(str(d.get("id", n)), str(d.get("name", "")), d["instruction"].strip(), instances, d["is_classification"]))
    if not tasks:
        raise ValueError(f"{path}: no seed tasks")
    return tasks


def clean_instruction(text: str) -> str:
    """Collapse whitespace, drop a leading list marker, capitalize: ' 3. write  a poem' -> 'Write a poem'."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"^(?:\d+\s*[.):]\s*)", "", text).strip()
    return text[:1].upper() + text[1:]


def parse_task_list(completion: str, first_number: int, truncated: bool) -> list[tuple[str, bool]]:
    """The instructions in a continued task list, each with whether the token limit cut it.

    >>> parse_task_list(" Write a poem.\\nTask 10: Name three rivers.\\nTask 11: Sum the", 9, truncated=True)
    [('Write a poem.', False), ('Name three rivers.', False), ('Sum the', True)]
    """
    pieces = re.split(r"\n*\s*Task\s*\d+\s*:", f"Task {first_number}:" + completion)
    pieces = [p for p in pieces[1:]]
    out = [(clean_instruction(p), False) for p in pieces]
    if truncated and out:
        out[-1] = (out[-1][0], True)
    return out


def filter_reason(instruction: str, cfg: SelfInstructConfig) -> tuple[str, str] | None:
    """The paper's heuristic filters (everything but ROUGE-L); None keeps the instruction."""
    if not instruction:
        return "empty_instruction", "nothing left after cleaning"
    words = len(instruction.split())
    if words <= cfg.min_words or words > cfg.max_words:
        return "instruction_length", f"{words} words (keep {cfg.min_words + 1}..{cfg.max_words})"
    lowered = instruction.lower()
    for kw in cfg.keywords:
        if re.search(rf"\b{re.escape(kw.lower())}\b", lowered):
            return "keyword_filtered", kw
    if lowered.startswith("write a program"):
        return "keyword_filtered", "write a program"
    if not instruction[0].isalnum():
        return "bad_start", f"starts with {instruction[0]!r}"
    if not instruction[0].isascii():
        return "bad_start", f"starts with non-ASCII {instruction[0]!r}"
    return None


class SelfInstruct:
    """The generation loop; one object per run, holding the seed tasks, the ROUGE filter and the backend."""

    def __init__(self, cfg: SelfInstructConfig, backend: Backend):
        self.cfg = cfg
        self.backend = backend
        self.seeds = load_seed_tasks(cfg.seed_tasks)
        self.rouge = RougeFilter([t.instruction for t in self.seeds], threshold=cfg.rouge_threshold)
        self.machine: list[str] = []
        self.kept_total = 0
        # With a chat template, the few-shot list is the start of the assistant's turn (the model continues its
        # own list); without one, the prompt is plain text, as the paper's GPT-3 completions were.
        self.format = "chat-prefill" if self.backend.chat_template() else "plain"

    def remember(self, kept: pl.DataFrame, rejected: pl.DataFrame) -> None:
        """Replay a finished batch (on resume): every instruction the ROUGE filter admitted, in the order it was
        admitted, goes back into the filter and the pool, whether or not its instance later failed."""
        frames = [f.select("source_id", "meta") for f in (kept, rejected) if f.height]
        if frames:
            for meta in pl.concat(frames).sort("source_id")["meta"].to_list():
                m = orjson.loads(meta)
                if m.get("admitted"):
                    self.rouge.add(m["instruction"])
                    self.machine.append(m["instruction"])
        self.kept_total += kept.height

    def _prefilled(self, header: str, prefill: str) -> str:
        """The assistant turn starts with `prefill`, so the model continues it; plain text without a template."""
        if self.format == "plain":
            return f"{header}\n\n{prefill}"
        return self.backend.render_chat([{"role": "user", "content": header}], add_generation_prompt=True) + prefill

    def _stops(self, *extra: str) -> tuple[str, ...]:
        eos = self.backend.special_tokens().get("eos_token")
        return tuple(s for s in (*extra, eos) if s)

    def task_prompt(self, rng: random.Random) -> tuple[str, int, list[str]]:
        cfg = self.cfg
        n_machine = min(cfg.num_machine_instructions, len(self.machine))
        shown = rng.sample(self.machine, n_machine) if n_machine else []
        shown += [t.instruction for t in rng.sample(self.seeds, min(cfg.num_prompt_instructions - n_machine, len(self.seeds)))]
        rng.shuffle(shown)
        listing = "".join(f"Task {i}: {ins}\n" for i, ins in enumerate(shown, start=1))
        nxt = len(shown) + 1
        return self._prefilled(TASK_HEADER, f"{listing}Task {nxt}:"), nxt, shown

    def batch(self, b: int, progress=None) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
        cfg = self.cfg
        timer = Timer()
        rng = random.Random(request_seed(cfg.seed, STAGE, "prompt", b))
        prompts = [self.task_prompt(rng) for _ in range(cfg.requests_per_batch)]
        seeds = [request_seed(cfg.seed, STAGE, b, j, "instructions") for j in range(len(prompts))]
        reqs = [
            GenerationRequest(prompt=p, params=cfg.instruction.params(self._stops(f"Task {2 * nxt}:"), s))
            for (p, nxt, _), s in zip(prompts, seeds)
        ]
        results = self.backend.generate(reqs, progress)
        tokens = sum(r.completion_tokens for r in results)
        rejected: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        parsed = 0
        for j, ((_, nxt, shown), res) in enumerate(zip(prompts, results)):
            for k, (ins, cut) in enumerate(parse_task_list(res.text, nxt, res.finish_reason == "length")):
                parsed += 1
                base = {"instruction": ins, "request": j, "request_seed": seeds[j], "position": k}
                sid = f"{b:05d}-{j:03d}-{k:02d}"
                verdict = ("truncated_instruction", "cut by the token limit") if cut else filter_reason(ins, cfg)
                if verdict is None:
                    keep, similar, score = self.rouge.offer(ins)
                    base.update(most_similar=similar, rouge_l=round(score, 6))
                    if not keep:
                        verdict = ("rouge_similar", f"{score:.4f} vs {similar!r}")
                    else:
                        base["admitted"] = True
                if verdict:
                    rejected.append(self._rejected(sid, ins, base, *verdict))
                else:
                    candidates.append({**base, "source_id": sid})
        is_cls, cls_tokens = self.classify([c["instruction"] for c in candidates], b, progress)
        instances, inst_tokens = self.instances(candidates, is_cls, b, progress)
        tokens += cls_tokens + inst_tokens
        kept = []
        common = {
            "generator": "self_instruct",
            **self.backend.describe(),
            "template": self.format,
            "instruction_sampling": cfg.instruction.model_dump(),
            "instance_sampling": cfg.instance.model_dump(),
            "run_seed": cfg.seed,
            "seed_tasks": str(cfg.seed_tasks or "alignmix"),
        }
        for c, cls, (inp, out, why) in zip(candidates, is_cls, instances):
            meta = {**common, **{k: v for k, v in c.items() if k != "source_id"}, "is_classification": cls, "input": inp}
            self.machine.append(c["instruction"])
            if why:
                rejected.append(self._rejected(c["source_id"], c["instruction"], meta, *why))
                continue
            if self.kept_total + len(kept) >= cfg.count:
                rejected.append(self._rejected(c["source_id"], c["instruction"], meta, "count_reached", f"{cfg.count} rows kept"))
                continue
            user = c["instruction"] + (f"\n\n{inp}" if inp else "")
            try:
                kept.append(sft_row([{"role": "user", "content": user}, {"role": "assistant", "content": out}],
                                    source=cfg.name, source_id=c["source_id"], meta=meta))
            except RowError as err:
                rejected.append(self._rejected(c["source_id"], c["instruction"], meta, err.reason, err.detail()))
        self.kept_total += len(kept)
        counters = {
            "seconds": timer.seconds(),
            "completion_tokens": tokens,
            "requests": len(reqs),
            "parsed_instructions": parsed,
            "classification": sum(is_cls),
        }
        return to_frame(kept, "sft"), rejected_frame(rejected), counters

    def classify(self, instructions: list[str], b: int, progress=None) -> tuple[list[bool], int]:
        """Few-shot yes/no from the seed labels; an answer that is neither counts as no."""
        if not instructions:
            return [], 0
        rng = random.Random(request_seed(self.cfg.seed, STAGE, "classify", b))
        yes = [t for t in self.seeds if t.is_classification]
        no = [t for t in self.seeds if not t.is_classification]
        shots = rng.sample(yes, min(3, len(yes))) + rng.sample(no, min(3, len(no)))
        rng.shuffle(shots)
        examples = "".join(
            f"Task: {t.instruction}\nIs it classification? {'Yes' if t.is_classification else 'No'}\n\n" for t in shots
        )
        reqs = [
            GenerationRequest(
                prompt=self._prefilled(CLASSIFY_HEADER, f"{examples}Task: {ins}\nIs it classification?"),
                params=SamplingParams(max_new_tokens=4, temperature=0.0, stop=self._stops("\n")),  # greedy yes/no
            )
            for i, ins in enumerate(instructions)
        ]
        res = self.backend.generate(reqs, progress)
        return [r.text.strip().lower().startswith("yes") for r in res], sum(r.completion_tokens for r in res)

    def instances(
        self, candidates: list[dict[str, Any]], is_cls: list[bool], b: int, progress=None
    ) -> tuple[list[tuple[str, str, tuple[str, str] | None]], int]:
        """(input, output, rejection or None) per instruction: input-first, or output-first for classification."""
        if not candidates:
            return [], 0
        rng = random.Random(request_seed(self.cfg.seed, STAGE, "instances", b))
        cls_seeds = [t for t in self.seeds if t.is_classification]
        gen_seeds = [t for t in self.seeds if not t.is_classification]
        reqs = []
        for i, (c, cls) in enumerate(zip(candidates, is_cls)):
            if cls:
                shots = rng.sample(cls_seeds, min(3, len(cls_seeds)))
                ex = "".join(f"Task: {t.instruction}\nClass label: {t.instances[0][1]}\nInput: {t.instances[0][0]}\n\n" for t in shots)
                prompt = self._prefilled(CLASS_INSTANCE_HEADER, f"{ex}Task: {c['instruction']}\nClass label:")
            else:
                shots = rng.sample(gen_seeds, min(3, len(gen_seeds)))
                ex = "".join(
                    f"Task: {t.instruction}\nInput: {t.instances[0][0] or 'None'}\nOutput: {t.instances[0][1]}\n\n" for t in shots
                )
                prompt = self._prefilled(INSTANCE_HEADER, f"{ex}Task: {c['instruction']}\nInput:")
            seed = request_seed(self.cfg.seed, STAGE, b, i, "instance")
            reqs.append(GenerationRequest(prompt=prompt, params=self.cfg.instance.params(self._stops("\nTask:", "Task:"), seed)))
        results = self.backend.generate(reqs, progress)
        out = []
        for cls, res in zip(is_cls, results):
            out.append(parse_instance(res.text, cls, res.finish_reason == "length"))
        return out, sum(r.completion_tokens for r in results)

    def _rejected(self, sid: str, text: str, meta: dict, reason: str, detail: str) -> dict[str, Any]:
        return {
            "id": content_id({"messages": [{"role": "user", "content": f"{self.cfg.name}/{sid}/{text}"}]}),
            "source": self.cfg.name,
            "source_id": sid,
            "text": text,
            "meta": orjson.dumps(meta, option=orjson.OPT_SORT_KEYS, default=str).decode(),
            "drop_stage": STAGE,
            "drop_reason": reason,
            "drop_detail": detail,
        }


def parse_instance(text: str, classification: bool, truncated: bool) -> tuple[str, str, tuple[str, str] | None]:
    """Read an instance off the model's continuation.

    Input-first:  " None\\nOutput: Paris"                  -> ("", "Paris", None)
    Output-first: " positive\\nInput: I loved the film."   -> ("I loved the film.", "positive", None)
    """
    if truncated:
        return "", "", ("truncated_instance", "cut by the token limit")
    second = "Input:" if classification else "Output:"
    first, sep, rest = text.partition(f"\n{second}")
    if not sep:
        first, sep, rest = text.partition(second)
    if not sep:
        return "", "", ("instance_unparseable", f"no {second!r} in {text[:80]!r}")
    first, rest = first.strip(), rest.strip()
    inp, out = (rest, first) if classification else (first, rest)
    if inp.lower() in ("none", "n/a", "-", "null", ""):
        inp = ""
    if not out:
        return inp, out, ("empty_output", "the instance has no output")
    if classification and not inp:
        return inp, out, ("empty_input", "a classification instance needs an input")
    return inp, out, None


def run_self_instruct(
    spec: dict[str, Any] | SelfInstructConfig,
    out_dir: str | Path,
    *,
    backend: Backend | None = None,
    progress: bool = False,
    rows_per_shard: int = 100_000,
) -> dict[str, Any]:
    """Bootstrap `count` new instructions into `out_dir` (data/, rejected/self_instruct.parquet, stats/...)."""
    cfg = spec if isinstance(spec, SelfInstructConfig) else parse_generator({"kind": "self_instruct", **spec})
    assert isinstance(cfg, SelfInstructConfig)
    seed_file = Path(cfg.seed_tasks) if cfg.seed_tasks else default_seed_tasks()
    fp = fingerprint(VERSION, cfg.model_dump(mode="json"), sha256_file(seed_file))
    batches = BatchStore(out_dir, STAGE, fp)
    if batches.store.is_done(STAGE, fp):
        return batches.store.read_stats(STAGE)
    gen = SelfInstruct(cfg, backend or get_backend(cfg.backend_spec()))
    max_batches = cfg.max_batches or max(1, -(-4 * cfg.count // cfg.requests_per_batch))
    with maybe_progress(f"self-instruct {cfg.name}", cfg.count, progress) as bar:
        for b in range(max_batches):
            if gen.kept_total >= cfg.count:
                break
            before = gen.kept_total
            if batches.done(b):
                gen.remember(batches.kept(b), batches.rejected(b))
            else:
                kept, rejected, counters = gen.batch(b, lambda done, tok: bar(0, tok))
                batches.write(b, kept, rejected, counters)
            bar(gen.kept_total - before, 0)
    stats = {"generator": "self_instruct", "name": cfg.name, "config": cfg.model_dump(mode="json"),
             **gen.backend.describe(), "template": gen.format, "seed_tasks": len(gen.seeds),
             "target_reached": gen.kept_total >= cfg.count}
    return batches.finish("sft", stats, rows_per_shard)
