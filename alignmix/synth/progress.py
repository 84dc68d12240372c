"""Progress for generation: requests done, completion tokens, tokens/s and ETA (see alignmix.pipeline.progress).

`maybe_progress(description, total, enabled)` yields the backends' ProgressFn `(requests_done, tokens)`. A rich
bar shows when `enabled` (the CLI) or when the caller asked for bars (`progress_bars`); a flow's
`progress_log(...)` gets a line every N seconds either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alignmix.pipeline.progress import track
from alignmix.synth.backends.base import ProgressFn


@contextmanager
def maybe_progress(description: str, total: int, enabled: bool) -> Iterator[ProgressFn]:
    """`with maybe_progress("magpie demo", 16, True) as bar: backend.generate(requests, bar)`."""
    with track(description, total, unit="requests", bar=True if enabled else None) as t:
        yield lambda requests, tokens: t.advance(requests, tokens)
