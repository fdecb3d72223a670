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

:func:`parse_executor` checks an ``--executor`` string without starting anything (callers
check it before they write any output); :func:`make_executor` parses and starts it.

**How a pool starts.** A ``forkserver`` pool starts a fresh interpreter that imports the
batch runner and pandas before it forks the workers: about half a second to a second and a
half on this 2-core machine, longer than the simulations of a small tuning. A ``fork`` pool
forks the workers straight from the creator, which has perfsim imported already: a few
milliseconds. :func:`make_executor` (what ``--executor process[:N]`` builds) therefore
forks when that is safe, i.e. when the creator runs no other Python thread at that moment
(:func:`pick_start_method`; a thread holding a lock while the process forks would leave
the lock held forever in the child), and falls back to ``forkserver`` otherwise. The
workers are forked in the constructor, right after that check, before the pool's own
manager thread exists. ``ProcessExecutor(n)`` itself keeps ``forkserver`` unless given
``start_method``. Results never depend on the start method: a task computes from its
arguments alone.

**Orphans.** Pool workers must not outlive the process that started them (a ``kill -9`` of
``perfsim sweep`` would otherwise leave its forkserver, workers and resource tracker running
for as long as their tasks take). Each worker runs :func:`_worker_init`: it asks the kernel
to SIGKILL it when its parent (the forkserver, or the creator for a ``fork`` pool) exits
(``prctl(PR_SET_PDEATHSIG)``), and starts a daemon thread that waits on a pidfd of the
process that created the pool and exits the worker the moment that process is gone. The
forkserver exits on its own when its creator dies (its "alive" pipe reaches EOF); the
resource tracker exits when the last holder of its pipe (the creator and the workers) is
gone. A ``fork`` pool has neither: its workers are the only processes it starts.
"""

from __future__ import annotations

import gc
import multiprocessing as mp
import os
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from perfsim.errors import PerfsimError


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


DASK_CONNECT_TIMEOUT_S = 5
"""How long to wait for a ``dask://HOST:PORT`` scheduler before giving up."""

PR_SET_PDEATHSIG = 1


def _set_pdeathsig(sig: int = signal.SIGKILL) -> bool:
    """``prctl(PR_SET_PDEATHSIG, sig)``: the kernel sends ``sig`` to this process when the
    thread that forked it exits. False where prctl is unavailable (non-Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - non-Linux
        return False


def _watch_pid(pid: int) -> None:
    """Exit this process (status 1, no cleanup: the parent that would collect results is
    gone) as soon as process ``pid`` has exited."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # pragma: no cover - old kernel or pid already gone
        fd = None
    if fd is not None:
        import select

        select.select([fd], [], [])
        os._exit(1)
    import time  # pragma: no cover - fallback without pidfd

    while True:  # pragma: no cover
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(0.5)


def _worker_init(creator_pid: int) -> None:
    """Initializer of every pool worker: die with the forkserver and with the creator.
    A Ctrl-C at the terminal (SIGINT to the whole process group) is ignored while it runs:
    raised here it would end the worker with "Exception in initializer" and break the pool,
    so the command could fail with BrokenProcessPool before its own KeyboardInterrupt
    (seen once, 2026-12-02); the command, interrupted, closes the pool and its workers."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _set_pdeathsig()
        if os.getppid() == 1:  # pragma: no cover - the parent died before prctl took effect
            os._exit(1)
        threading.Thread(target=_watch_pid, args=(creator_pid,), name="perfsim-parent-watch",
                         daemon=True).start()
    finally:
        signal.signal(signal.SIGINT, before)


@contextmanager
def paused_gc():
    """The cyclic garbage collector off for the block, then as it was. For a block that
    imports (pandas, the simulator: a few hundred thousand objects, none of them garbage):
    every collection during it would walk the objects imported so far for nothing (about
    10% of ``perfsim tune``'s start-up imports on this machine, 2026-12-01).

    At the end the objects tracked so far are moved to the oldest generation (``gc.freeze``
    then ``gc.unfreeze``: no object is walked), where they would have gone had they
    survived the collections the pause skipped: otherwise the first young collection after
    the block walks them all, and a process forked after the block (a pool worker) pays
    that walk again, touching every page it shares with its parent. A full collection
    walks them as it walks any long-lived object; nothing is exempt from collection.
    Nested blocks restore the state they found."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.freeze()
            gc.unfreeze()
            gc.enable()


def prefetch_imports(modules: Iterable[str]) -> Prefetch:
    """Import ``modules`` in a daemon thread and return it (a :class:`Prefetch`): what the
    caller needs after a pool's work (an analysis, a report's figures) loads while the
    workers compute and this process only waits. Start it once the pool's workers exist (a
    ``fork`` pool forks in its constructor) and join it (or :meth:`~Prefetch.stop` it)
    before forking again. A module that fails to import is left for the caller's own import
    to report. The collector is paused while the thread imports (:func:`paused_gc`; the
    process's other threads only wait for the pool)."""
    t = Prefetch(modules)
    t.start()
    return t


class Prefetch(threading.Thread):
    """The thread of :func:`prefetch_imports`: imports its modules in order until all are
    imported or it is told to :meth:`stop`."""

    def __init__(self, modules: Iterable[str]) -> None:
        super().__init__(name="perfsim-prefetch", daemon=True)
        self.modules = tuple(modules)
        self.stopping = threading.Event()

    def run(self) -> None:
        import importlib

        with paused_gc():
            for m in self.modules:
                if self.stopping.is_set():
                    break
                try:
                    importlib.import_module(m)
                except ImportError:
                    pass

    def stop(self) -> None:
        """Import no module after the one being imported, and return once the thread has
        ended. For a caller whose wait is over (the pool's work is done): the modules still
        to import are then imported by the caller's own code where it first needs them,
        after work of its own that needs none of them (the last of a list usually matters
        last), instead of all before it."""
        self.stopping.set()
        self.join()


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


START_METHODS = ("fork", "forkserver")
"""The start methods a :class:`ProcessExecutor` takes (``auto``: :func:`pick_start_method`)."""


def pick_start_method() -> str:
    """``fork`` if this platform has it and no Python thread but the calling one is running
    (no other thread can hold a lock the children would inherit held; native library pools
    such as OpenBLAS's reset themselves at fork), else ``forkserver``. A fork costs
    milliseconds; a forkserver pool a new interpreter's imports."""
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "forkserver"


def _kill_alive(workers) -> None:
    """Kill each of the pool ``workers`` (processes) still alive and wait for it."""
    for w in workers:
        if w.is_alive():
            w.kill()
            w.join()


class ProcessExecutor(SerialExecutor):
    """A local process pool, at most ``2 × workers`` tasks in flight so a huge sweep is not
    all pickled up front. ``start_method``: ``forkserver`` (default; perfsim preloaded in the
    server), ``fork`` (workers forked from this process at once; only when no other Python
    thread runs, else PerfsimError) or ``auto`` (:func:`pick_start_method`)."""

    name = "process"

    def __init__(self, workers: int | None = None, start_method: str = "forkserver") -> None:
        self.workers = workers or cpu_count()
        if start_method == "auto":
            start_method = pick_start_method()
        if start_method not in START_METHODS:
            raise PerfsimError(f"start method {start_method!r}: unknown; allowed: auto, "
                               + ", ".join(START_METHODS))
        if start_method == "fork" and threading.active_count() != 1:
            raise PerfsimError("a fork pool needs a single-threaded creator "
                               f"({threading.active_count()} threads run); use forkserver")
        self.start_method = start_method
        # concurrent.futures is imported here, by the pool that uses it, not with this module
        # (about 0.01 CPU-s): ``perfsim tune`` forks its figure process, which needs
        # :func:`cpu_count` and :func:`paused_gc` but no pool, before it imports that.
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Imported once in the forkserver, inherited by every worker it forks: the batch
            # runner (numpy, SimPy, planner, cost model) and pandas, which every task's
            # records go through (about a second per worker otherwise, on the first task).
            ctx.set_forkserver_preload(["perfsim.batch.runner", "pandas"])
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                        initializer=_worker_init, initargs=(os.getpid(),))
        if start_method == "fork":
            before = set(mp.active_children())
            try:
                self._fork_workers()
            except BaseException:
                # Interrupted while the workers start (a Ctrl-C): no caller holds this pool
                # to close it, and multiprocessing's exit handler would wait forever for the
                # workers already forked, idle on an empty queue (seen 2026-12-02: a `perfsim
                # tune` left waiting an hour after its exit status was decided).
                self._abandon(set(mp.active_children()) - before)
                raise

    def _abandon(self, started) -> None:
        """Kill the workers of a pool whose start failed: those it holds and the processes
        in ``started`` (forked before it could record them), then shut it down."""
        _kill_alive(set(started) | set((getattr(self.pool, "_processes", None) or {}).values()))
        self.pool.shutdown(wait=False, cancel_futures=True)

    def _fork_workers(self) -> None:
        """Fork every worker now, while this process is known to run one Python thread: a
        fork pool launches all its workers on its first submission, and that no-op task is
        submitted here. Python >= 3.12 warns about any fork of a process with several OS
        threads; the others here are native library pools (OpenBLAS), which handle fork."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*use of fork\(\) may lead to deadlocks",
                                    category=DeprecationWarning)
            self.pool.submit(os.getpid)

    def map_unordered(self, fn, items):
        from concurrent.futures import FIRST_COMPLETED, wait

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
        """Shut the pool down (queued tasks cancelled) and wait for its workers. A worker
        still alive afterwards is killed: after a Ctrl-C that reached both the command and
        its workers, the pool can be left with idle workers nobody tells to exit, and
        multiprocessing's exit handler would wait for them forever."""
        workers = list((getattr(self.pool, "_processes", None) or {}).values())
        self.pool.shutdown(wait=True, cancel_futures=True)
        _kill_alive(workers)


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
            try:
                self.client = Client(address, timeout=f"{DASK_CONNECT_TIMEOUT_S}s")
            except (OSError, TimeoutError) as exc:
                raise PerfsimError(f"--executor: cannot reach the Dask scheduler at {address} "
                                   f"within {DASK_CONNECT_TIMEOUT_S} s ({type(exc).__name__}); "
                                   "is it running?") from None
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


MAX_WORKERS = 256
"""The most workers ``process:N`` / ``dask-local:N`` starts: each worker holds a few pipes,
and a pool waits on them with ``select()``, which takes no descriptor above 1023; with some
thousands of workers the pool failed ("filedescriptor out of range in select()") after
forking them all (``--executor process:100000`` ran out of memory on 2026-12-02)."""


def parse_executor(spec: str | None = None, workers: int | None = None) -> tuple[str, object]:
    """Check an ``--executor`` string without starting anything: ``(kind, arg)`` with kind
    ``serial`` | ``process`` | ``dask-local`` (arg: worker count or None) | ``dask`` (arg: the
    scheduler's ``tcp://`` address). Raises :class:`PerfsimError` (one line) otherwise."""
    s = (spec or "process").strip()
    head, _, n = s.partition(":") if not s.startswith(("dask://", "tcp://")) else (s, "", "")
    count = workers
    if n:
        try:
            count = int(n)
        except ValueError:
            raise PerfsimError(f"--executor {s!r}: the worker count must be an integer") from None
        if not 1 <= count <= MAX_WORKERS:
            raise PerfsimError(f"--executor {s!r}: the worker count must be from 1 to "
                               f"{MAX_WORKERS}")
    if head == "serial":
        if n:
            raise PerfsimError(f"--executor {s!r}: serial runs in this process and takes no "
                               "worker count; allowed: serial, process[:N], dask-local[:N]")
        return "serial", None
    if head in ("process", "dask-local"):
        return head, count
    for scheme in ("dask://", "tcp://"):
        if head.startswith(scheme) and len(head) > len(scheme):
            return "dask", "tcp://" + head[len(scheme):]
    raise PerfsimError(f"--executor {s!r}: unknown; allowed: serial, process[:N], "
                       "dask://HOST:PORT, dask-local[:N]")


def make_executor(spec: str | None = None, workers: int | None = None):
    """``serial`` | ``process[:N]`` (default, N = all cores; forked from this process when
    it runs a single Python thread, see :func:`pick_start_method`) | ``dask://HOST:PORT`` |
    ``tcp://HOST:PORT`` | ``dask-local[:N]``."""
    kind, arg = parse_executor(spec, workers)
    if kind == "serial":
        return SerialExecutor()
    if kind == "process":
        return ProcessExecutor(arg, start_method="auto")
    if kind == "dask-local":
        return DaskExecutor(None, arg)
    return DaskExecutor(arg)
