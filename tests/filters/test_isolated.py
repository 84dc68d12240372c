"""A function run in a child process under a hard deadline (`alignmix.filters.isolated`), and the math checker on it."""

from __future__ import annotations

import threading
import time

import pytest

from alignmix.filters.isolated import Isolated
from alignmix.filters.verify import check_answer


def test_a_call_past_its_deadline_is_killed_and_the_next_call_gets_a_new_child():
    sleep = Isolated("time:sleep")
    assert sleep((0,), deadline=30) is None
    first = sleep._local.child.proc
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        sleep((60,), deadline=1)
    assert time.monotonic() - start < 30
    assert first.poll() is not None  # killed, not left running
    assert sleep((0,), deadline=30) is None
    assert sleep._local.child.proc.pid != first.pid


def test_errors_come_back_and_a_dead_child_is_reported():
    sqrt = Isolated("math:sqrt")
    assert sqrt((9.0,), deadline=30) == 3.0
    with pytest.raises(ValueError, match="math domain error"):
        sqrt((-1.0,), deadline=30)
    assert sqrt((4.0,), deadline=30) == 2.0  # the child survived its error
    with pytest.raises(ChildProcessError, match="exit 3"):
        Isolated("os:_exit")((3,), deadline=30)


def test_each_thread_has_its_own_child_and_it_ends_with_the_thread():
    getpid = Isolated("os:getpid")
    pids = []
    threads = [threading.Thread(target=lambda: pids.append(getpid((), deadline=30))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(pids)) == 2


@pytest.mark.slow
def test_a_runaway_math_answer_times_out_in_a_worker_thread():
    """math-verify's own timer works only in a main thread; the child process gives workers a limit too."""
    got = {}

    def check():
        got["bomb"] = check_answer(r"The answer is $\boxed{9^{9^{9^{9}}}}$", "1", timeout_seconds=2)
        got["half"] = check_answer(r"so $\boxed{\frac{1}{2}}$", "0.5", timeout_seconds=2)

    worker = threading.Thread(target=check)
    worker.start()
    worker.join(120)
    assert not worker.is_alive()
    assert got["bomb"].status == "timeout" and got["half"].status == "correct"
