"""Training progress for a person watching: steps done, tokens/s (or steps/s), ETA and the last loss.

`TrainingProgress("train-sft")` is a transformers TrainerCallback that feeds `alignmix.pipeline.progress.track`:
under a flow's `progress_log(...)` the run log gets a line such as
`train-sft: 30/120 steps, 0.5 steps/s, ETA 3m, loss 1.234` every N seconds (tokens/s where the
trainer counts input tokens) and one at the end. transformers'
own tqdm bar already shows in a terminal, so this adds no second bar.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from transformers import TrainerCallback

from alignmix.pipeline.progress import Tracker, track


class TrainingProgress(TrainerCallback):
    def __init__(self, description: str):
        self.description = description
        self._ctx: AbstractContextManager[Tracker] | None = None
        self.tracker: Tracker | None = None
        self._first_step = 0
        self._first_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._ctx = track(self.description, state.max_steps or None, unit="steps", bar=False)
        self.tracker = self._ctx.__enter__()
        # A resumed run counts from where it resumed, so that the rate and ETA are this run's.
        self._first_step = state.global_step
        self._first_tokens = getattr(state, "num_input_tokens_seen", 0) or 0
        if state.max_steps:
            self.tracker.total = state.max_steps - self._first_step

    def on_step_end(self, args, state, control, **kwargs):
        if self.tracker is not None:
            tokens = (getattr(state, "num_input_tokens_seen", 0) or 0) - self._first_tokens
            self.tracker.update(done=state.global_step - self._first_step, tokens=tokens)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        if self.tracker is not None and logs and "loss" in logs:
            self.tracker.fields["loss"] = float(logs["loss"])

    def on_train_end(self, args, state, control, **kwargs):
        if self._ctx is not None:
            self._ctx.__exit__(None, None, None)
            self._ctx = self.tracker = None
