"""proteinmtp.pool.WorkerPool: per-job failures, a worker killed while it holds a job, cancelling what no
worker has started, and the in-process path, with plain functions (no model)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest

from proteinmtp.pool import WorkerDied, WorkerPool


def square(x: int) -> int:
    return x * x


def die_on_minus_one(x: int) -> int:
    if x == -1:
        os.kill(os.getpid(), signal.SIGKILL)   # as the OOM killer would
    if x == -2:
        raise ValueError("bad job")
    return x * x


def slow(x: int) -> int:
    time.sleep(0.5)
    return x


def _no_children(timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while multiprocessing.active_children() and time.time() < deadline:
        time.sleep(0.05)
    return not multiprocessing.active_children()


def test_in_process_path_runs_at_submit_and_reports_exceptions():
    pool = WorkerPool(die_on_minus_one, 1)
    pool.submit("a", 3)
    pool.submit("b", -2)
    assert pool.in_flight == 2
    res = dict(pool.results())
    assert res["a"] == 9 and isinstance(res["b"], ValueError) and pool.in_flight == 0


def test_a_killed_worker_fails_its_job_with_worker_died_and_the_pool_goes_on():
    pool = WorkerPool(die_on_minus_one, 2)
    try:
        pool.submit(0, -1)                       # kills its worker process
        first = dict(pool.results(wait_until=0))
        assert isinstance(first[0], WorkerDied) and "died" in str(first[0])
        for k in range(1, 5):                    # fresh processes serve the jobs after
            pool.submit(k, k)
        pool.submit(5, -2)
        later = dict(pool.results(wait_until=0))
    finally:
        pool.close()
    assert {k: later[k] for k in range(1, 5)} == {k: k * k for k in range(1, 5)}
    assert isinstance(later[5], ValueError) and str(later[5]) == "bad job"
    assert _no_children()


def test_results_block_until_at_most_n_in_flight():
    pool = WorkerPool(slow, 2)
    try:
        for k in range(4):
            pool.submit(k, k)
        got = list(pool.results(wait_until=1))
        assert pool.in_flight <= 1 and len(got) >= 3
        got += list(pool.results(wait_until=0))
    finally:
        pool.close()
    assert sorted(k for k, _ in got) == [0, 1, 2, 3] and all(k == v for k, v in got)


def test_cancel_waiting_drops_jobs_no_worker_started():
    pool = WorkerPool(slow, 1 + 1)
    try:
        for k in range(10):
            pool.submit(k, k)
        time.sleep(0.2)                          # the first jobs are running
        dropped = pool.cancel_waiting()
        finished = dict(pool.results(wait_until=0))
    finally:
        pool.close(wait=False)
    assert dropped >= 5 and len(finished) == 10 - dropped
    assert all(finished[k] == k for k in finished)
    assert _no_children()


@pytest.mark.parametrize("workers", [1, 2])
def test_square_results_are_the_same_for_any_worker_count(workers):
    pool = WorkerPool(square, workers)
    try:
        for k in range(6):
            pool.submit(k, k)
        assert dict(pool.results(wait_until=0)) == {k: k * k for k in range(6)}
    finally:
        pool.close()
