"""Training metrics: one JSON line per logging step, warnings when the signals look wrong, and plots.

A DPO line looks like

    {"step": 10, "epoch": 0.4, "loss": 0.62, "rewards/chosen": 0.05, "rewards/rejected": -0.11,
     "rewards/margins": 0.16, "rewards/accuracies": 0.75, "logps/chosen": -212.3, "logps/rejected": -240.1,
     "kl": 0.8, "learning_rate": 4.1e-06, "warnings": []}

Warnings (each with a stable code): `kl_high` (KL from the reference above `warn_kl`), `margins_fast`
(rewards/margins rising faster than `warn_margin_growth` per step: usually overfitting or a too-high lr),
`chosen_logps_falling` (logps/chosen down by more than `warn_chosen_logps_drop` of its first value: DPO is
pushing both responses down, the known likelihood-displacement failure).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import orjson
from transformers import TrainerCallback

log = logging.getLogger("alignmix.training")

DPO_KEYS = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "kl",
)
# What the plots group together: (file stem, title, keys).
PLOT_GROUPS = (
    ("loss", "loss", ("loss",)),
    ("rewards", "implicit rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
    ("accuracies", "reward accuracy (chosen > rejected)", ("rewards/accuracies",)),
    ("logps", "sequence log-probabilities", ("logps/chosen", "logps/rejected")),
    ("kl", "KL from the reference (nats / sequence)", ("kl",)),
    ("lr", "learning rate", ("learning_rate",)),
)


def check_signals(
    first: dict[str, float] | None,
    previous: dict[str, float] | None,
    current: dict[str, float],
    *,
    warn_kl: float,
    warn_margin_growth: float,
    warn_chosen_logps_drop: float,
) -> list[dict[str, Any]]:
    """The warnings for `current` given the first and previous metric lines.

    >>> check_signals({"step": 1, "logps/chosen": -100.0}, None, {"step": 9, "logps/chosen": -130.0, "kl": 12.0},
    ...               warn_kl=10, warn_margin_growth=0.5, warn_chosen_logps_drop=0.25)[0]["code"]
    'kl_high'
    """
    out = []
    step = current.get("step", 0)
    kl = current.get("kl")
    if kl is not None and kl > warn_kl:
        out.append({"code": "kl_high", "step": step, "message": f"KL from the reference is {kl:.2f} > {warn_kl}"})
    m_now, m_prev = current.get("rewards/margins"), (previous or {}).get("rewards/margins")
    if m_now is not None and m_prev is not None and step > previous["step"]:
        growth = (m_now - m_prev) / (step - previous["step"])
        if growth > warn_margin_growth:
            out.append(
                {
                    "code": "margins_fast",
                    "step": step,
                    "message": f"rewards/margins grew {growth:.3f} per step (> {warn_margin_growth}); "
                    "lower the learning rate or raise beta",
                }
            )
    c_now, c_first = current.get("logps/chosen"), (first or {}).get("logps/chosen")
    if c_now is not None and c_first is not None and c_first != 0 and first is not current:
        drop = (c_first - c_now) / abs(c_first)
        if drop > warn_chosen_logps_drop:
            out.append(
                {
                    "code": "chosen_logps_falling",
                    "step": step,
                    "message": f"logps/chosen fell {drop:.0%} from {c_first:.1f} to {c_now:.1f}; the chosen responses "
                    "are losing likelihood too (try a lower lr, a larger beta, or an SFT term)",
                }
            )
    return out


class MetricsCallback(TrainerCallback):
    """Writes each logging step to `path` as JSON Lines, with the warnings it raised.

    On resume, lines past the checkpoint's step are dropped first, so the file never holds a step twice.
    """

    def __init__(self, path: str | Path, *, warn_kl: float = 10.0, warn_margin_growth: float = 0.5,
                 warn_chosen_logps_drop: float = 0.25):
        self.path = Path(path)
        self.thresholds = {
            "warn_kl": warn_kl,
            "warn_margin_growth": warn_margin_growth,
            "warn_chosen_logps_drop": warn_chosen_logps_drop,
        }
        self.first: dict[str, float] | None = None
        self.previous: dict[str, float] | None = None
        self.warnings: list[dict[str, Any]] = []

    def on_train_begin(self, args, state, control, **kwargs):
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= state.global_step and "warnings" in r]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in kept))
        steps = [r for r in kept if "warnings" in r]
        self.first = steps[0] if steps else None
        self.previous = steps[-1] if steps else None
        self.warnings = [w for r in steps for w in r["warnings"]]

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record: dict[str, Any] = {"step": state.global_step}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                record[k] = float(v) if not isinstance(v, int) else v
        if "train_runtime" not in record:  # the end-of-training summary is not a step
            record["warnings"] = check_signals(self.first, self.previous, record, **self.thresholds)
            for w in record["warnings"]:
                log.warning("step %s: %s", w["step"], w["message"])
            self.warnings.extend(record["warnings"])
            self.first = self.first or record
            self.previous = record
        with open(self.path, "ab") as f:
            f.write(orjson.dumps(record) + b"\n")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().split(b"\n") if line.strip()]


def step_records(path: str | Path) -> list[dict[str, Any]]:
    return [r for r in read_metrics(path) if "warnings" in r]


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of each metric (what a sweep compares side by side)."""
    out: dict[str, float] = {}
    for r in records:
        for k, v in r.items():
            if k not in ("warnings",) and isinstance(v, (int, float)):
                out[k] = v
    return out


def plot_metrics(path: str | Path, out_dir: str | Path) -> list[Path]:
    """One PNG per metric group present in the file, against the optimizer step (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = step_records(path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for stem, title, keys in PLOT_GROUPS:
        present = [k for k in keys if any(k in r for r in records)]
        if not present:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
        for k in present:
            pts = [(r["step"], r[k]) for r in records if k in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=2.5, label=k)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(present) > 1:
            ax.legend(fontsize=8)
        fig.tight_layout()
        target = out_dir / f"{stem}.png"
        fig.savefig(target)
        plt.close(fig)
        written.append(target)
    return written
