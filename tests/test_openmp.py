"""utils.runtime.cpu_process: no idle OpenMP pool left in the thread that hands the work to worker threads
(release_pool, in_passing_thread)."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch

from utils.errors import CodecError
from utils.runtime.cpu_process import can_release_pool, in_passing_thread, release_pool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads through /proc")
needs_pause = pytest.mark.skipif(
    not can_release_pool(), reason="this torch's OpenMP runtime predates OpenMP 5.0's omp_pause_resource_all "
    "(e.g. the libgomp of torch 2.5): release_pool() cannot end a pool"
)
N = 1 << 22


def _process_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _parallel_sum() -> torch.Tensor:
    """An operation big enough for PyTorch to run it as an OpenMP parallel region."""
    return torch.arange(N, dtype=torch.float64).sum()


@needs_pause
def test_release_pool_ends_this_threads_openmp_workers_and_work_goes_on() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _parallel_sum()  # this thread now has a pool with at least one worker thread
        before = _process_threads()
        assert release_pool()
        deadline = time.monotonic() + 5.0
        while _process_threads() >= before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _process_threads() < before, "the pool's worker threads did not end"
        assert torch.equal(_parallel_sum(), expected)  # the runtime starts a new pool when it needs one
    finally:
        torch.set_num_threads(previous)


@needs_pause
def test_a_worker_thread_gets_its_own_pool_and_the_same_result() -> None:
    """What the live pipeline does: the main thread releases its pool, a worker thread computes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = _parallel_sum()
        release_pool()
        results = []

        def work() -> None:
            torch.set_num_threads(2)
            results.append(_parallel_sum())
            results.append(release_pool())  # a worker can end its own pool too

        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
        assert torch.equal(results[0], expected) and results[1] is True
    finally:
        torch.set_num_threads(previous)


def _settled_threads() -> int:
    """The thread count once it has held for 0.3 s: the pools earlier tests released end in their own time."""
    count, since, deadline = _process_threads(), time.monotonic(), time.monotonic() + 5.0
    while time.monotonic() - since < 0.3 and time.monotonic() < deadline:
        time.sleep(0.01)
        if _process_threads() != count:
            count, since = _process_threads(), time.monotonic()
    return count


def _wait_for_threads(count: int) -> int:
    deadline = time.monotonic() + 5.0
    while _process_threads() > count and time.monotonic() < deadline:
        time.sleep(0.01)
    return _process_threads()


def test_work_in_passing_thread_leaves_no_pool_behind_on_any_runtime() -> None:
    """Set-up done in_passing_thread (the live pipeline's loading, tuning, timing) runs in a thread of its own
    with a pool of its own; both end with it, also where release_pool cannot end a pool."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = _settled_threads()
        seen = {}

        def work(scale: float) -> torch.Tensor:
            total = _parallel_sum() * scale
            seen["thread"], seen["threads"] = threading.get_ident(), _process_threads()
            return total

        assert in_passing_thread(work, 2.0).item() == N * (N - 1)  # exact in float64
        assert seen["thread"] != threading.get_ident()
        assert seen["threads"] >= before + 2, "no OpenMP worker ran beside the set-up thread"
        assert _wait_for_threads(before) == before, "the set-up thread or its pool outlived the work"
    finally:
        torch.set_num_threads(previous)


def test_in_passing_thread_raises_the_works_own_error_here() -> None:
    def fail() -> None:
        raise CodecError("cannot load")

    with pytest.raises(CodecError, match="cannot load"):
        in_passing_thread(fail)
    with pytest.raises(KeyError):
        in_passing_thread({}.__getitem__, "missing")
