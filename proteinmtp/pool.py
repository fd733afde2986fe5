"""One bounded process pool for the CPU half of inference and evaluation.

The model's forward pass runs in the main process; each result is handed to :class:`WorkerPool`, which runs
a function (reconstruction and writing a record, or scoring one protein) in ``workers`` spawned processes,
so the next forward pass runs while the CPU works. With ``workers`` = 1 the function runs in this process,
at submit time. The caller bounds what is in flight (``results(wait_until=n)`` blocks until at most n jobs
are), so memory does not grow with the input.

Failures are per job: an exception raised by the function comes back as that job's result. A worker
process that dies (killed, out of memory, crashed) fails the jobs it and its siblings held with
:class:`WorkerDied`; the pool starts new processes for the jobs after. ``cancel_waiting`` drops the jobs
no worker has started (the cancel path of Ctrl-C / SIGTERM). Workers spawn (no fork of a process holding
CUDA or model weights), ignore SIGINT (the parent decides), end with their parent on Linux, and use one
BLAS thread each.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool


def _worker_init(parent_pid: int) -> None:
    """A pool worker: Ctrl-C is the parent's to handle (it lets the jobs in flight finish); on Linux the
    worker ends when its parent dies (even by SIGKILL); one BLAS thread per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover
            pass
    if os.getppid() != parent_pid:  # the parent is already gone
        os._exit(1)
    try:
        from threadpoolctl import threadpool_limits  # optional dependency

        threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover
        pass


class WorkerDied(RuntimeError):
    """A worker process ended while it held this job (killed, out of memory, crashed)."""


class WorkerPool:
    """Runs ``fn(arg)`` for submitted (key, arg) jobs; results come back as (key, result or Exception) in
    completion order (see the module docstring). ``fn`` and ``arg`` must be picklable when ``workers`` > 1.
    """

    def __init__(self, fn: Callable[[object], object], workers: int = 1):
        self.fn = fn
        self.workers = max(1, int(workers))
        self._pending: dict[Future, Hashable] = {}
        self._ready: list[tuple[Hashable, object]] = []
        self._ex: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._ex is None:
            self._ex = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=_worker_init, initargs=(os.getpid(),))
        return self._ex

    @property
    def in_flight(self) -> int:
        """Jobs submitted whose result has not been handed out yet."""
        return len(self._pending) + len(self._ready)

    def submit(self, key: Hashable, arg: object) -> None:
        if self.workers == 1:
            try:
                res: object = self.fn(arg)
            except Exception as e:  # noqa: BLE001 - reported for this job by the caller
                res = e
            self._ready.append((key, res))
            return
        try:
            fut = self._executor().submit(self.fn, arg)
        except RuntimeError:  # BrokenProcessPool (a RuntimeError): start fresh processes
            self._drop_executor()
            fut = self._executor().submit(self.fn, arg)
        self._pending[fut] = key

    def results(self, wait_until: int | None = None) -> Iterator[tuple[Hashable, object]]:
        """Finished results; with ``wait_until`` n, block until at most n jobs are still in flight."""
        while self._ready:
            yield self._ready.pop(0)
        while self._pending:
            done = [f for f in self._pending if f.done()]
            if not done:
                if wait_until is None or len(self._pending) <= wait_until:
                    return
                done, _ = wait(list(self._pending), return_when=FIRST_COMPLETED)
            for f in done:
                key = self._pending.pop(f)
                try:
                    res: object = f.result()
                except BrokenProcessPool as e:
                    self._drop_executor()
                    res = WorkerDied(f"the worker process died ({e}); rerun to retry")
                except Exception as e:  # noqa: BLE001
                    res = e
                yield key, res

    def _drop_executor(self) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=False, cancel_futures=True)
            self._ex = None

    def cancel_waiting(self) -> int:
        """Drop the jobs no worker has started (they stay undone: a rerun does them); returns how many."""
        dropped = [f for f in self._pending if f.cancel()]
        for f in dropped:
            del self._pending[f]
        return len(dropped)

    def close(self, wait: bool = True) -> None:
        if self._ex is not None:
            self._ex.shutdown(wait=wait, cancel_futures=True)
            self._ex = None
