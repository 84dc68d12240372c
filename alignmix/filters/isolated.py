"""A function run in a child process under a hard deadline: the one way to bound code that can hold the GIL
for ever (sympy evaluating 9^(9^(9^9)) on a model's answer), which neither a signal nor a thread interrupts.

    check = Isolated("alignmix.filters.verify:_check_math", warm="math_verify")
    check(("x = 2", "2", 5), deadline=17.0)   # the function's result, or TimeoutError once the child is killed

Each calling thread gets its own child (threads never queue behind each other), started on first use as a plain
`python` subprocess (so it works inside Dask's daemonic workers, where multiprocessing may not fork), with its
warm-up imports done before any deadline starts. A child that runs past its deadline is killed; the next call
starts another. Messages are length-prefixed pickles over the child's stdin and a private copy of its stdout
(what the function prints goes to stderr).
"""

from __future__ import annotations

import importlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
import weakref
from typing import Any

_HEADER = struct.Struct("<Q")


class Isolated:
    """`target` ("module:function") called in a child process; see the module docstring."""

    def __init__(self, target: str, warm: str | None = None, start_timeout: float = 300.0):
        self.target, self.warm, self.start_timeout = target, warm, start_timeout
        self._local = threading.local()

    def __call__(self, args: tuple[Any, ...], deadline: float) -> Any:
        child = getattr(self._local, "child", None)
        if child is None or child.proc.poll() is not None:
            child = self._local.child = _Child(self.target, self.warm, self.start_timeout)
        try:
            ok, value = child.call(args, deadline)
        except (TimeoutError, EOFError) as err:
            child.kill()
            self._local.child = None
            if isinstance(err, EOFError):
                raise ChildProcessError(f"{self.target} died in its child process (exit {child.proc.poll()})") from None
            raise
        if not ok:
            raise value
        return value


class _Child:
    def __init__(self, target: str, warm: str | None, start_timeout: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import serve; serve({target!r}, {warm!r})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self._closer = weakref.finalize(self, _close, self.proc)  # the thread that owned it ended
        if _read(self.proc.stdout, start_timeout) != "ready":
            raise RuntimeError(f"the child process for {target} did not start")

    def call(self, args: tuple[Any, ...], deadline: float) -> tuple[bool, Any]:
        _write(self.proc.stdin, args)
        return _read(self.proc.stdout, deadline)

    def kill(self) -> None:
        self._closer.detach()
        self.proc.kill()
        self.proc.wait()


def _close(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.stdin.close()  # the child reads EOF and exits
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


def _write(stream, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream, timeout: float | None) -> Any:
    """One message from `stream`; TimeoutError when it is not all there within `timeout` s, EOFError at its end."""
    fd, end = stream.fileno(), None if timeout is None else time.monotonic() + timeout
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size, end, timeout))
    return pickle.loads(_read_exactly(fd, size, end, timeout))


def _read_exactly(fd: int, need: int, end: float | None, timeout: float | None) -> bytes:
    chunks = []
    while need:
        left = None if end is None else max(0.0, end - time.monotonic())
        if not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no answer within {timeout:.0f} s")
        chunk = os.read(fd, need)
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        need -= len(chunk)
    return b"".join(chunks)


def serve(target: str, warm: str | None) -> None:
    """The child's loop: call `target` on each argument tuple read from stdin until stdin closes."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    sys.stdout = sys.stderr  # what the function prints must not corrupt the answers
    module, name = target.split(":")
    fn = getattr(importlib.import_module(module), name)
    if warm:
        importlib.import_module(warm)
    _write(out, "ready")
    while True:
        try:
            args = _read(sys.stdin.buffer, None)
        except EOFError:
            return
        try:
            answer = (True, fn(*args))
        except Exception as err:  # noqa: BLE001 - the caller re-raises it
            answer = (False, err)
        try:
            _write(out, answer)
        except (pickle.PicklingError, TypeError, AttributeError):
            _write(out, (False, RuntimeError(repr(answer[1]))))
