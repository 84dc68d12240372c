"""Iterative DPO's rounds: the recipe section, where each round lives, what it is fed and what it records.

Each round samples `samples_per_prompt` answers per prompt from the current policy (the start model plus the last
round's adapter), rates them with the recipe's judge, pairs them (best vs worst, or UltraFeedback binarization),
runs the recipe's curation stages on the pairs and trains DPO from the last round's adapter, the reference fixed
at the start model (RLHFlow's recipe: Dong et al., RLHF Workflow, TMLR 2024).

    iterative:
      rounds: 3
      prompts: [my_prompts]              # sources or generators; default: every generator and prompt source
      samples_per_prompt: 8
      pairing: best_worst                # or binarize: chosen = best, rejected = a random lower one
      sampling: {temperature: 1.0, max_new_tokens: 256}
      heldout: {prompts: 16}             # never trained on: held-out pairs and the win rates
      dpo: {max_steps: 100, beta: 0.1}

On disk, beside the mix:

    <out>/<name>/rounds/
      heldout/                 held-out prompts' pairs from the start policy (the test split of every round)
      round-0/answers/         the start policy's rated answers to the held-out prompts
      round-K/samples/         responses -> judge -> pairs (resumable batches)
      round-K/data/            the round's curated pairs;  rejected/, stats/: every step's drops and figures
      round-K/adapter/         the round's DPO adapter (train_dpo's folder layout: metrics.jsonl, eval.json, ...)
      round-K/answers/         the trained policy's rated answers to the held-out prompts
      metrics.jsonl            one line per finished round

This module decides (specs, prompt splits, fingerprints, figures) and imports no other alignmix package; the
flow (`alignmix.flows.iterative`) runs the steps with synth, filters and training.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import orjson
import polars as pl
from pydantic import Field, model_validator

import alignmix
from alignmix.pipeline.config import StrictModel
from alignmix.pipeline.store import MixStore, atomic_path, fingerprint, write_shards

VERSION = "iterative-round-v1"
PAIRING_REJECTED = {"best_worst": "lowest", "binarize": "random"}


class HeldoutSpec(StrictModel):
    """Prompts set aside before any round: never trained on, the same for every round."""

    prompts: int = Field(16, ge=1, description="how many prompts of the pool are held out")
    temperature: float = Field(
        0.0, ge=0, description="sampling temperature of the answers compared for the win rate (0: greedy)"
    )


class IterativeSpec(StrictModel):
    """A recipe's `iterative:` section. `sampling`, `judge` and `dpo` are checked by their owners (synth's
    Responder and judge configs, training's DPOTrainConfig) when the recipe is resolved."""

    rounds: int = Field(3, ge=1, le=50, description="rounds of sample -> judge -> pair -> curate -> train")
    prompts: str | list[str] | None = Field(
        None, description="the sources or generators whose rows give the prompts (default: every generator and "
        "every source of prompt rows)"
    )
    prompts_per_round: int | None = Field(
        None, gt=0, description="prompts per round, disjoint across rounds (default: the pool after the held-out "
        "prompts, split into `rounds` equal parts)"
    )
    samples_per_prompt: int = Field(8, ge=2, description="answers sampled per prompt from the current policy")
    pairing: Literal["best_worst", "binarize"] = Field(
        "best_worst", description="best_worst: the highest- against the lowest-rated answer (ties dropped); "
        "binarize: UltraFeedback's, the highest against a random lower-rated one"
    )
    model: str = Field("default", description="the start policy, also DPO's fixed reference")
    prompts_per_batch: int = Field(8, gt=0, description="prompts per written (resumable) batch")
    sampling: dict[str, Any] = Field(
        default_factory=dict, description="how the policy samples: temperature, top_p, max_new_tokens, batch_size, "
        "system_prompt, backend (transformers | vllm), backend_options"
    )
    judge: dict[str, Any] | None = Field(None, description="the judge (default: preferences.judge, else the LLM judge)")
    heldout: HeldoutSpec = Field(default_factory=HeldoutSpec)
    dpo: dict[str, Any] = Field(default_factory=dict, description="DPO settings (training.dpo's fields)")

    @model_validator(mode="after")
    def _policy_fields(self) -> IterativeSpec:
        owned = [f"sampling.{k}" for k in ("model", "n", "label") if k in self.sampling]
        owned += [f"dpo.{k}" for k in ("model", "init_adapter") if k in self.dpo]
        if owned:
            raise ValueError(f"{', '.join(owned)}: set per round by the flow; give the start policy as "
                             "`iterative.model` and the answers per prompt as `samples_per_prompt`")
        return self

    def prompt_names(self) -> list[str]:
        if not self.prompts:
            return []
        return [self.prompts] if isinstance(self.prompts, str) else list(self.prompts)


# --- where things live ----------------------------------------------------------------------------------------


def rounds_dir(mix_dir: str | Path) -> Path:
    return Path(mix_dir) / "rounds"


def round_dir(mix_dir: str | Path, k: int) -> Path:
    return rounds_dir(mix_dir) / f"round-{k}"


# --- prompts ----------------------------------------------------------------------------------------------------


def split_prompts(prompts: pl.DataFrame, spec: IterativeSpec, seed: int) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """(held-out prompts, one frame per round) from a frame with `prompt_id`: a seeded order (a hash of seed and
    prompt id, so the split does not depend on the order the prompts arrived in), the held-out ones first, then
    disjoint slices of `prompts_per_round`."""
    order = prompts.with_columns(
        pl.col("prompt_id").map_elements(lambda p: fingerprint("split", seed, p), return_dtype=pl.String).alias("_key")
    ).sort("_key").drop("_key")
    held, pool = order.head(spec.heldout.prompts), order.slice(spec.heldout.prompts)
    per_round = spec.prompts_per_round or pool.height // spec.rounds
    if per_round < 1 or per_round * spec.rounds > pool.height:
        raise ValueError(
            f"iterative: {prompts.height} prompts, {held.height} held out, leave {pool.height} for {spec.rounds} rounds "
            f"of {per_round}; fix: add prompts, or lower iterative.heldout.prompts, iterative.prompts_per_round or "
            "iterative.rounds"
        )
    return held, [pool.slice(i * per_round, per_round) for i in range(spec.rounds)]


# --- what each step is given --------------------------------------------------------------------------------


class RoundPlan:
    """The specs every step of every round is given, from the recipe's section, seed, judge and curation.

    Round k samples from the policy after round k-1 (round 1: the start model) and trains the policy after round
    k; round 0 is the start policy, trained by no round."""

    def __init__(self, spec: IterativeSpec, mix_dir: str | Path, seed: int, preferences: dict[str, Any] | None = None,
                 curation: list[dict[str, Any]] | None = None):
        self.spec, self.mix_dir, self.seed = spec, Path(mix_dir), seed
        self.judge = dict(spec.judge) if spec.judge is not None else dict((preferences or {}).get("judge") or {})
        self.curation = list(curation or [])

    @property
    def root(self) -> Path:
        return rounds_dir(self.mix_dir)

    def dir(self, k: int) -> Path:
        return round_dir(self.mix_dir, k)

    @property
    def heldout_dir(self) -> Path:
        return self.root / "heldout"

    def adapter(self, k: int) -> str | None:
        """The adapter of the policy after round k (None: round 0, the start policy)."""
        return str(self.dir(k) / "adapter") if k > 0 else None

    def _seed(self, *parts: Any) -> int:
        return int(fingerprint("iterative-seed", self.seed, *parts)[:8], 16) & 0x7FFF_FFFF

    def responder(self, k: int, n: int, **sampling: Any) -> dict[str, Any]:
        """A `preferences.responders` entry that samples from the policy after round k."""
        merged = {**self.spec.sampling, **sampling}
        options = dict(merged.pop("backend_options", None) or {})
        if self.adapter(k):
            options["adapter"] = self.adapter(k)
        return {**merged, "model": self.spec.model, "n": n, "label": f"policy-{k}", "backend_options": options}

    def samples_spec(self, k: int) -> dict[str, Any]:
        """Round k's `preferences` spec: samples_per_prompt answers from the policy after round k-1, the judge and
        the pairing. k = 0: the held-out pairs, from the start policy."""
        return {
            "name": f"round-{k}" if k else "heldout",
            "seed": self._seed("samples", k),
            "prompts_per_batch": self.spec.prompts_per_batch,
            "responders": [self.responder(max(k - 1, 0), self.spec.samples_per_prompt)],
            "judge": self.judge,
            "binarize": {"rejected": PAIRING_REJECTED[self.spec.pairing]},
        }

    def answers_spec(self, k: int) -> dict[str, Any]:
        """One answer per held-out prompt from the policies before (index 0) and after (index 1) round k, the same
        seed for both, rated by the judge: the round's win rate."""
        t = self.spec.heldout.temperature
        return {
            "name": f"answers-{k}",
            "seed": self._seed("answers"),
            "prompts_per_batch": self.spec.prompts_per_batch,
            "responders": [self.responder(k - 1, 1, temperature=t), self.responder(k, 1, temperature=t)],
            "judge": self.judge,
        }

    def dpo_spec(self, k: int) -> dict[str, Any]:
        """Round k's DPO settings: from the start model (the fixed reference), continuing round k-1's adapter."""
        return {**self.spec.dpo, "model": self.spec.model, "init_adapter": self.adapter(k - 1)}

    def fingerprint(self, k: int, prompt_ids: list[str], previous: str) -> str:
        """What round k's outputs depend on: the section, seed, judge, curation, its prompts and `previous`, the
        fingerprint of the round before it (round 1: of the held-out pairs), so a changed round 1 reruns every
        later round."""
        return fingerprint(VERSION, alignmix.__version__, self.spec.model_dump(mode="json"), self.seed, self.judge,
                           self.curation, k, sorted(prompt_ids), previous)


# --- what a round records -------------------------------------------------------------------------------------


def _last_text(col: str) -> pl.Expr:
    return pl.col(col).list.last().struct.field("content").str.len_chars()


def _mean(s: pl.Series) -> float | None:
    s = s.drop_nulls()
    return round(float(s.mean()), 6) if s.len() else None


def pair_figures(pairs: pl.DataFrame) -> dict[str, Any]:
    """Rows, judge scores, score margins and lengths (characters) of preference rows."""
    if pairs.is_empty():
        return {"rows": 0}
    m = pairs.select(
        pl.col("score_chosen"), pl.col("score_rejected"),
        (pl.col("score_chosen") - pl.col("score_rejected")).alias("margin"),
        _last_text("chosen").alias("chosen_chars"), _last_text("rejected").alias("rejected_chars"),
    )
    return {
        "rows": pairs.height,
        "score_chosen": _mean(m["score_chosen"]),
        "score_rejected": _mean(m["score_rejected"]),
        "margin_mean": _mean(m["margin"]),
        "margin_min": round(float(m["margin"].min()), 6) if m["margin"].drop_nulls().len() else None,
        "chosen_chars": _mean(m["chosen_chars"]),
        "rejected_chars": _mean(m["rejected_chars"]),
    }


def response_figures(responses: pl.DataFrame | None) -> dict[str, Any]:
    """How many answers the policy gave, their mean length (characters) and the share cut at max_new_tokens."""
    if responses is None or responses.is_empty():
        return {"rows": 0}
    finish = responses["meta"].str.json_path_match("$.finish_reason")
    return {
        "rows": responses.height,
        "mean_chars": _mean(responses.select(_last_text("messages").alias("chars"))["chars"]),
        "truncated_share": round(float((finish == "length").mean()), 6),
    }


STEP_KEYS = ("stage", "rows_in", "rows_kept", "dropped")
TRAIN_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "kl")


def round_record(k: int, plan: RoundPlan, steps: list[dict[str, Any]], samples: dict[str, Any],
                 pairs: pl.DataFrame, dpo: dict[str, Any], wins: dict[str, Any]) -> dict[str, Any]:
    """What round k records: rows at every step (responses, judge, pairing, each curation stage, DPO), the
    sampled answers' length, the kept pairs' scores and margins, DPO's last logged figures, the held-out
    preference accuracy before and after, and the win rate over the previous policy."""
    return {
        "round": k,
        "sampled_from": plan.adapter(k - 1) or plan.spec.model,
        "adapter": plan.adapter(k),
        "steps": [{key: s.get(key) for key in STEP_KEYS} for s in steps]
        + [{"stage": "dpo", "rows_in": pairs.height, "rows_kept": dpo["train"]["rows"],
            "dropped": dpo["train"].get("rows_set_aside", {})}],
        "samples": samples,
        "pairs": pair_figures(pairs),
        "train": {"steps": dpo["train"].get("steps"), **{k2: _round6(dpo["train"]["final"].get(k2)) for k2 in TRAIN_KEYS}},
        "heldout": {"pairs": dpo["eval"]["after"].get("pairs", 0), "before": dpo["eval"]["before"],
                    "after": dpo["eval"]["after"]},
        "win_rate": wins,
    }


def _round6(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def copy_records(src: Path, dst: Path) -> None:
    """A step's rejected rows and stats (`src`/rejected, `src`/stats) into `dst`, under their own names."""
    for sub in ("rejected", "stats"):
        for f in sorted((src / sub).glob("*")) if (src / sub).exists() else []:
            if f.is_file() and not f.name.startswith("."):
                (dst / sub).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst / sub / f.name)


def write_dpo_data(plan: RoundPlan, k: int, pairs: pl.DataFrame, heldout: pl.DataFrame) -> Path:
    """Round k's DPO input, a folder train_dpo reads: the round's pairs (train) and the held-out pairs (test)."""
    out = plan.dir(k) / "work" / "dpo-data"
    write_shards(pairs, out / "data", "train")
    for stale in (out / "data").glob("test-*"):
        stale.unlink()
    if heldout.height:
        write_shards(heldout, out / "data", "test")
    return out


# --- the records on disk -------------------------------------------------------------------------------------


def round_done(plan: RoundPlan, k: int, round_fp: str) -> dict[str, Any] | None:
    """Round k's record, when it finished with this fingerprint and its adapter and pairs are intact."""
    store = MixStore(plan.dir(k))
    return store.read_stats("round") if store.is_done("round", round_fp) else None


def mark_round(plan: RoundPlan, k: int, round_fp: str, record: dict[str, Any]) -> None:
    store = MixStore(plan.dir(k))
    outputs = [*store.shard_files(), *sorted((plan.dir(k) / "adapter").glob("adapter_*"))]
    store.mark_done("round", round_fp, record, outputs)
    write_metrics(plan)


def write_metrics(plan: RoundPlan) -> Path:
    """`rounds/metrics.jsonl`: one line per finished round, rewritten whole (a rerun never appends twice)."""
    lines = []
    for k in range(1, plan.spec.rounds + 1):
        record = MixStore(plan.dir(k)).read_stats("round")
        if record:
            lines.append(orjson.dumps({k2: v for k2, v in record.items() if k2 not in ("fingerprint", "outputs")},
                                      option=orjson.OPT_SORT_KEYS))
    path = plan.root / "metrics.jsonl"
    with atomic_path(path) as tmp:
        tmp.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def load_round_metrics(mix_dir: str | Path) -> list[dict[str, Any]]:
    """The per-round records of a mix built with `iterative:` ([] without one)."""
    path = rounds_dir(mix_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]

