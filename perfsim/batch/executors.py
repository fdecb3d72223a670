"""Executors: one interface, three backends.

``executor.map_unordered(fn, items)`` yields ``fn(item)`` for every item, in completion
order. The batch layer gives each task a *batch* of points (``run_batch``), so scheduling
and pickling are paid once per batch, not per simulation. Results never depend on the
executor: each point is computed from its own data alone.

* :class:`SerialExecutor` — in this process, in order (debugging, tests, tiny sweeps);
* :class:`ProcessExecutor` — a local process pool (the default; all cores);
* :class:`DaskExecutor` — ``dask.distributed``: an existing scheduler
  (``dask://HOST:PORT``) or a ``LocalCluster`` it starts (``dask-local[:N]``). Optional
  dependency: ``pip install perfsim[dask]``.

:func:`make_executor` parses the ``--executor`` string.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from perfsim.errors import PerfsimError


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


class SerialExecutor:
    name = "serial"

    def __init__(self) -> None:
        self.workers = 1

    def map_unordered(self, fn: Callable, items: Iterable) -> Iterator:
        for it in items:
            yield fn(it)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ProcessExecutor(SerialExecutor):
    """A local process pool (``forkserver`` start method, perfsim preloaded), at most
    ``2 × workers`` tasks in flight so a huge sweep is not all pickled up front."""

    name = "process"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cpu_count()
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["perfsim.batch.runner"])
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)

    def map_unordered(self, fn, items):
        it = iter(items)
        pending = set()
        limit = 2 * self.workers
        for x in it:
            pending.add(self.pool.submit(fn, x))
            if len(pending) >= limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                yield f.result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(SerialExecutor):
    """Tasks on a Dask cluster: ``address`` of a running scheduler, or a LocalCluster of
    ``workers`` single-threaded worker processes."""

    name = "dask"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise PerfsimError("the dask executor needs dask.distributed: "
                               "pip install 'perfsim[dask]'") from None
        self.cluster = None
        if address:
            self.client = Client(address, timeout="30s")
        else:
            self.cluster = LocalCluster(n_workers=workers or cpu_count(), threads_per_worker=1,
                                        processes=True, dashboard_address=None,
                                        silence_logs=40)
            self.client = Client(self.cluster)
        self.workers = max(1, sum(w.get("nthreads", 1) for w in
                                  self.client.scheduler_info()["workers"].values()))

    def map_unordered(self, fn, items):
        from distributed import as_completed

        futures = [self.client.submit(fn, x, pure=False) for x in items]
        for fut in as_completed(futures):
            yield fut.result()
            fut.release()

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(spec: str | None = None, workers: int | None = None):
    """``serial`` | ``process[:N]`` (default, N = all cores) | ``dask://HOST:PORT`` |
    ``tcp://HOST:PORT`` | ``dask-local[:N]``."""
    s = (spec or "process").strip()
    head, _, n = s.partition(":") if not s.startswith(("dask://", "tcp://")) else (s, "", "")
    count = workers
    if n:
        try:
            count = int(n)
        except ValueError:
            raise PerfsimError(f"--executor {s!r}: the worker count must be an integer") from None
        if count < 1:
            raise PerfsimError(f"--executor {s!r}: the worker count must be >= 1")
    if head == "serial":
        return SerialExecutor()
    if head == "process":
        return ProcessExecutor(count)
    if head == "dask-local":
        return DaskExecutor(None, count)
    if head.startswith("dask://"):
        return DaskExecutor("tcp://" + head[len("dask://"):])
    if head.startswith("tcp://"):
        return DaskExecutor(head)
    raise PerfsimError(f"--executor {s!r}: unknown; allowed: serial, process[:N], "
                       "dask://HOST:PORT, dask-local[:N]")
