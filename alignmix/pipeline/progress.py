"""Progress a person can watch: rows (or requests, or steps) done, tokens/s and ETA, while a long step runs.

Library code only says what it is doing:

    with track("magpie demo", total=20_000, unit="requests") as t:
        for batch in batches:
            ...
            t.advance(len(batch), tokens=tokens_in_batch)

and whoever runs it decides where that goes, for everything tracked inside a `with`:

    with progress_bars():                                   # the CLI: a rich bar per tracked step
        run_magpie(spec, out)
    with progress_log(get_run_logger().info, every=30):     # a flow: one line every 30 s at most
        run_magpie(spec, out)

A log line reads `magpie demo: 1,024/20,000 requests, 412 tok/s, ETA 41m` (see `progress_line`). Outside both
`with`s a tracker only counts. This module imports neither Prefect nor rich at import time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Clock = Callable[[], float]


@dataclass
class _Where:
    bars: bool = False
    console: Any = None
    log: Callable[[str], None] | None = None
    every: float = 30.0
    clock: Clock = time.monotonic


_WHERE: ContextVar[_Where] = ContextVar("alignmix_progress", default=_Where())


@contextmanager
def progress_bars(enabled: bool = True, console: Any = None) -> Iterator[None]:
    """Show a rich progress bar for every step tracked inside the `with` (when `enabled`), on `console` (a
    rich Console; rich's own by default)."""
    where = _WHERE.get()
    token = _WHERE.set(_Where(bars=enabled, console=console, log=where.log, every=where.every, clock=where.clock))
    try:
        yield
    finally:
        _WHERE.reset(token)


@contextmanager
def progress_log(log: Callable[[str], None], every: float = 30.0, clock: Clock = time.monotonic) -> Iterator[None]:
    """Send a progress line to `log` at most every `every` seconds (and at the end, unless the last line already
    holds the final counts) for every step tracked
    inside the `with`. A flow passes its run logger's `info`; `clock` is for tests."""
    where = _WHERE.get()
    token = _WHERE.set(_Where(bars=where.bars, console=where.console, log=log, every=every, clock=clock))
    try:
        yield
    finally:
        _WHERE.reset(token)


def _duration(seconds: float) -> str:
    """`_duration(42)` -> '42s', `_duration(2460)` -> '41m', `_duration(7500)` -> '2h05m'."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _rate(per_second: float) -> str:
    """`_rate(0.5)` -> '0.5', `_rate(72528.3)` -> '72,528': a decimal only where it says something."""
    return f"{per_second:,.0f}" if per_second >= 100 else f"{per_second:.1f}"


def progress_line(description: str, done: int, total: int | None, unit: str, tokens: int, elapsed: float,
                  fields: dict[str, Any] | None = None) -> str:
    """One line of progress: done/total, tokens/s (or units/s when nothing counts tokens), ETA from the rate so far.

    >>> progress_line("magpie demo", 1024, 20_000, "requests", 1_000_000, 2427.2)
    'magpie demo: 1,024/20,000 requests, 412 tok/s, ETA 12h29m'
    >>> progress_line("train-sft", 30, 120, "steps", 0, 60.0, {"loss": 1.2345})
    'train-sft: 30/120 steps, 0.5 steps/s, ETA 3m, loss 1.234'
    """
    parts = [f"{done:,}/{total:,} {unit}" if total else f"{done:,} {unit}"]
    elapsed = max(elapsed, 1e-9)
    if tokens:
        parts.append(f"{tokens / elapsed:,.0f} tok/s")
    else:
        parts.append(f"{_rate(done / elapsed)} {unit}/s")
    if total and done >= total:
        parts.append(f"done in {_duration(elapsed)}")
    elif total and done > 0:
        parts.append(f"ETA {_duration((total - done) * elapsed / done)}")
    for k, v in (fields or {}).items():
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return f"{description}: " + ", ".join(parts)


@dataclass
class Tracker:
    """Counts one step's progress and hands it to the sinks chosen by the caller (`progress_bars`, `progress_log`).

    `advance(n, tokens)` adds `n` units done and `tokens` generated; `set(**fields)` attaches values shown with
    the line (a training loss). `done` may also be moved back or forth with `update(done=...)`.
    """

    description: str
    total: int | None
    unit: str = "rows"
    done: int = 0
    tokens: int = 0
    fields: dict[str, Any] = field(default_factory=dict)
    _where: _Where = field(default_factory=_Where)
    _start: float = 0.0
    _last_log: float = 0.0
    _logged: tuple[int, int] | None = None  # (done, tokens) of the last line sent
    _bar: Any = None
    _task: Any = None

    def __post_init__(self) -> None:
        self._start = self._last_log = self._where.clock()

    @property
    def elapsed(self) -> float:
        return self._where.clock() - self._start

    def line(self) -> str:
        return progress_line(self.description, self.done, self.total, self.unit, self.tokens, self.elapsed, self.fields)

    def advance(self, n: int = 1, tokens: int = 0, **fields: Any) -> None:
        self.update(done=self.done + n, tokens=self.tokens + tokens, **fields)

    def update(self, *, done: int | None = None, tokens: int | None = None, **fields: Any) -> None:
        if done is not None:
            self.done = done
        if tokens is not None:
            self.tokens = tokens
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self._info())
        w = self._where
        if w.log is not None and w.clock() - self._last_log >= w.every:
            self._last_log = w.clock()
            self._send()

    def _send(self) -> None:
        self._logged = (self.done, self.tokens)
        self._where.log(self.line())

    def _info(self) -> str:
        rate = self.tokens / max(self.elapsed, 1e-9)
        parts = [f"{rate:,.0f} tok/s"] if self.tokens else []
        parts += [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.fields.items()]
        return ", ".join(parts)

    def _open(self) -> None:
        if self._where.bars:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                TextColumn("{task.fields[info]}"), TextColumn("ETA"), TimeRemainingColumn(),
                console=self._where.console,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total, info="")

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, info=self._info())
            self._bar.stop()
        if self._where.log is not None and self._logged != (self.done, self.tokens):
            self._send()  # the closing line, unless the last one already said it all


@contextmanager
def track(description: str, total: int | None, *, unit: str = "rows", bar: bool | None = None) -> Iterator[Tracker]:
    """Track one step inside the `with`; `bar` forces a rich bar on (True) or off (False) whatever the caller chose."""
    where = _WHERE.get()
    if bar is not None:
        where = _Where(bars=bar, console=where.console, log=where.log, every=where.every, clock=where.clock)
    tracker = Tracker(description, total, unit, _where=where)
    tracker._open()
    try:
        yield tracker
    finally:
        tracker._close()
