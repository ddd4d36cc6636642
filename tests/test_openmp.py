"""utils.runtime.cpu_process: ending the calling thread's OpenMP workers before worker threads take the work."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
import torch

from utils.runtime.cpu_process import can_release_pool, release_pool

pytestmark = [
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts threads through /proc"),
    pytest.mark.skipif(not can_release_pool(), reason="this torch's OpenMP runtime predates OpenMP 5.0's "
                       "omp_pause_resource_all (e.g. the libgomp of torch 2.5): release_pool() cannot end a pool"),
]


def _process_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _parallel_sum() -> torch.Tensor:
    """An operation big enough for PyTorch to run it as an OpenMP parallel region."""
    return torch.arange(1 << 22, dtype=torch.float64).sum()


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
