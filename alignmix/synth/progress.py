"""A progress bar for generation: requests done, completion tokens, tokens/s (rich), or nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from alignmix.synth.backends.base import ProgressFn


class TokenProgress:
    """`update(requests, tokens)` is the backends' ProgressFn; a disabled one only counts."""

    def __init__(self, description: str, total: int, enabled: bool = False):
        self.description = description
        self.total = total
        self.enabled = enabled
        self.tokens = 0
        self.start = time.perf_counter()
        self._bar = None
        self._task = None

    def __enter__(self) -> TokenProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[tokens]} tok"),
                TextColumn("{task.fields[tps]:.1f} tok/s"),
                TimeElapsedColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, tokens=0, tps=0.0)
        return self

    def update(self, requests: int, tokens: int) -> None:
        self.tokens += tokens
        if self._bar is not None:
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            self._bar.update(self._task, advance=requests, tokens=self.tokens, tps=self.tokens / elapsed)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


@contextmanager
def maybe_progress(description: str, total: int, enabled: bool) -> Iterator[ProgressFn]:
    with TokenProgress(description, total, enabled) as bar:
        yield bar.update
