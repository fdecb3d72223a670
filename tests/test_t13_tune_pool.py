"""Issue 13, tune: how a tuning's simulations reach the workers. A fork pool (started in
milliseconds when the creator runs one Python thread) and its orphan guarantee, the tune's
choice between a pool and this process, its tasks, its once-validated inputs. Every path
gives the same rows as the plain serial run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from orphans import children, left_after

from perfsim.batch.executors import (
    ProcessExecutor,
    SerialExecutor,
    pick_start_method,
)
from perfsim.batch.sweep import parse_sweep, plan_sweep
from perfsim.errors import PerfsimError
from perfsim.tune import parse_tune, run_tune
from perfsim.tune.search import (
    MAX_CHUNK,
    POOL_MIN_CALLS,
    chunk_points,
    pool_worth_starting,
    settings_points,
    tune_executor,
    tune_work,
)

ROOT = Path(__file__).resolve().parent.parent


def _spec(**kw):
    data = {"name": "t", "workload": "trace_replay", "seed": 1, "replications": 2,
            "knobs": {"kernel.realign_pmd": [True, False], "cost.syscall_ns": [5000, 20000]}}
    data.update(kw)
    return parse_tune(data)


def _rows(res) -> pd.DataFrame:
    return res.runs.drop(columns=["wall_s"]).reset_index(drop=True)


def _storm(count: int, ceilings=(0, 512)):
    return parse_tune({"name": "f", "workload": "ipi_storm", "seed": 3, "replications": 3,
                       "set": {f"workload.streams.mover-{i}.count": count for i in range(4)},
                       "knobs": {"arch.tlb.single_page_flush_ceiling": list(ceilings)}})


def _points(spec):
    from perfsim.tune.search import grid_settings

    return settings_points(spec, [{}]) + settings_points(spec, grid_settings(spec))


# --------------------------------------------------------------------------- start method
def _fresh(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (one Python thread, whatever earlier tests left
    running in this one); its stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_a_single_threaded_creator_forks_its_workers():
    out = _fresh("""
        import threading
        from perfsim.batch.executors import make_executor, pick_start_method
        assert threading.active_count() == 1
        print(pick_start_method())
        ex = make_executor("process:2")
        print(ex.start_method, sorted(ex.map_unordered(abs, [-1, -2, -3])))
        ex.close()
    """)
    assert out.split("\n")[:2] == ["fork", "fork [1, 2, 3]"]


def test_a_creator_running_another_thread_uses_the_forkserver():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert pick_start_method() == "forkserver"
        with pytest.raises(PerfsimError, match="single-threaded creator"):
            ProcessExecutor(2, start_method="fork")
    finally:
        stop.set()
        t.join()


def test_an_unknown_start_method_is_one_line_error():
    with pytest.raises(PerfsimError, match="start method 'spawnish': unknown; allowed: auto, "
                                           "fork, forkserver"):
        ProcessExecutor(2, start_method="spawnish")


FORK_ORPHAN_SCRIPT = textwrap.dedent("""
    import time
    from perfsim.batch.executors import ProcessExecutor
    ex = ProcessExecutor(2, start_method="fork")
    futures = [ex.pool.submit(time.sleep, 120) for _ in range(4)]
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_fork_pool_workers_exit_when_their_creator_is_killed():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", FORK_ORPHAN_SCRIPT], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        kids: set[int] = set()
        while time.monotonic() < deadline and len(kids) < 2:  # the two workers, nothing else
            time.sleep(0.1)
            kids = children(proc.pid)
        assert len(kids) == 2, kids
        time.sleep(0.5)  # let the workers run their initializer
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = left_after(kids)
    assert not left, f"fork workers still running after their creator's kill -9: {left}"


# --------------------------------------------------------------------------- same rows
SAME_ROWS_SCRIPT = """
    import sys, threading
    from perfsim.batch.executors import ProcessExecutor
    from perfsim.tune import parse_tune, run_tune
    spec = parse_tune({"name": "t", "workload": "trace_replay", "seed": 1, "replications": 2,
                       "knobs": {"kernel.realign_pmd": [True, False],
                                 "cost.syscall_ns": [5000, 20000]}})
    out = sys.argv[1]
    for name in ("fork", "forkserver"):
        ex = ProcessExecutor(2, start_method=name)
        try:
            run_tune(spec, executor=ex, quiet=True).runs.to_pickle(f"{out}/{name}.pkl")
        finally:
            ex.close()
    run_tune(spec, executor="process:2", quiet=True).runs.to_pickle(f"{out}/auto.pkl")
    # the prefetch thread is joined: nothing but the main thread is left, the next pool forks
    print(threading.active_count())
"""


def test_tune_rows_are_the_same_on_every_executor_and_start_method(tmp_path):
    assert _fresh(SAME_ROWS_SCRIPT, str(tmp_path)).strip() == "1"
    spec = _spec()
    ref = _rows(run_tune(spec, executor="serial", quiet=True))
    got = {n: pd.read_pickle(tmp_path / f"{n}.pkl").drop(columns=["wall_s"])
           for n in ("fork", "forkserver", "auto")}
    got["process:1"] = _rows(run_tune(spec, executor="process:1", quiet=True))
    for name, rows in got.items():
        pd.testing.assert_frame_equal(rows.reset_index(drop=True), ref, obj=name)


# --------------------------------------------------------------------------- pool or not
def test_a_pool_needs_two_workers_and_two_simulations():
    for sims, workers in ((1, 8), (50, 1), (0, 2)):
        assert not pool_worth_starting(sims, 10**9, workers, "fork")
    assert pool_worth_starting(2, 10**9, 2, "fork")


def test_a_pool_is_started_only_for_enough_calls_for_its_start_method():
    for method, least in POOL_MIN_CALLS.items():
        assert not pool_worth_starting(10, least - 1, 2, method)
        assert pool_worth_starting(10, least, 2, method)
    assert POOL_MIN_CALLS["forkserver"] > POOL_MIN_CALLS["fork"]


def test_calls_unknown_in_advance_start_a_pool():
    assert pool_worth_starting(4, None, 2, "forkserver")


def test_tune_work_counts_each_distinct_simulation_once():
    spec = _storm(count=5, ceilings=(0, 33, 64))  # 33 is x86's own: the baseline's runs
    assert tune_work(spec, _points(spec)) == (3 * 3, 3 * 3 * 20)


def test_tune_work_is_unknown_for_a_stream_without_count():
    spec = _spec(knobs={"kernel.realign_pmd": [True, False]})  # trace_replay replays a trace
    assert tune_work(spec, _points(spec)) == (2 * 2, None)


def test_tune_work_of_an_optuna_search_counts_its_trials():
    spec = _spec(knobs={"cost.syscall_ns": {"min": 1000, "max": 9000, "type": "int"}},
                 search={"trials": 7})
    base = settings_points(spec, [{}])
    sims, _ = tune_work(spec, base)
    assert sims == 2 + 7 * 2
    assert tune_work(spec, base, trials=3)[0] == 2 + 3 * 2


def test_a_small_tuning_on_process_runs_in_this_process():
    spec = _storm(count=2)  # 4 movers x 2 calls, 3 settings x 3 replications
    assert tune_work(spec, _points(spec)) == (9, 9 * 8)
    ex = tune_executor("process:2", spec, _points(spec))
    assert isinstance(ex, SerialExecutor) and ex.name == "serial"
    res = run_tune(spec, executor="process:2", quiet=True)
    pd.testing.assert_frame_equal(_rows(res), _rows(run_tune(spec, executor="serial",
                                                             quiet=True)))


def test_a_tuning_with_enough_work_gets_its_pool():
    spec = _storm(count=200)
    sims, calls = tune_work(spec, _points(spec))
    assert (sims, calls) == (9, 9 * 800) and calls >= max(POOL_MIN_CALLS.values())
    method = pick_start_method()
    ex = tune_executor("process:2", spec, _points(spec))
    try:
        assert ex.name == "process" and ex.workers == 2 and ex.start_method == method
    finally:
        ex.close()


def test_serial_and_bad_executors_are_unchanged():
    spec = _spec()
    assert tune_executor("serial", spec, settings_points(spec, [{}])).name == "serial"
    with pytest.raises(PerfsimError, match="--executor 'bogus': unknown"):
        run_tune(spec, executor="bogus", quiet=True)


# --------------------------------------------------------------------------- tasks
def test_chunks_are_a_multiple_of_the_workers_of_near_equal_size_in_order():
    rng = random.Random(13)
    for _ in range(300):
        n, w = rng.randrange(0, 400), rng.randrange(1, 17)
        items = list(range(n))
        chunks = chunk_points(items, w)
        assert [x for c in chunks for x in c] == items
        if n == 0:
            assert chunks == []
            continue
        sizes = [len(c) for c in chunks]
        assert max(sizes) <= MAX_CHUNK and min(sizes) >= 1
        assert max(sizes) - min(sizes) <= 1
        assert len(chunks) % w == 0 or len(chunks) == n  # fewer points than workers: one each


def test_one_chunk_per_worker_when_that_fits():
    assert [len(c) for c in chunk_points(list(range(18)), 2)] == [9, 9]
    assert [len(c) for c in chunk_points(list(range(5)), 8)] == [1] * 5


# --------------------------------------------------------------------------- inputs
def test_settings_validated_once_equal_settings_resolved_alone():
    spec = _spec(knobs={"kernel.realign_pmd": [True, False], "cost.syscall_ns": [5000, 20000],
                        "workload.seed": [3, 4]})
    from perfsim.tune.search import grid_settings

    settings = grid_settings(spec)
    together = settings_points(spec, settings)
    alone = [p for s in settings for p in settings_points(spec, [s])]
    assert len(together) == len(alone) == len(settings) * spec.replications
    for a, b in zip(together, alone, strict=True):
        assert (a.key, a.replication, a.params, a.seed_entropy) == \
            (b.key, b.replication, b.params, b.seed_entropy)
        assert a.workload == b.workload and a.workload.digest == b.workload.digest
        assert a.target == b.target and a.target.digest == b.target.digest
        assert a.profile == b.profile and a.profile.digest == b.profile.digest


def test_a_sweeps_cells_share_validated_inputs_equal_to_fresh_ones(tmp_path):
    data = {"name": "s", "seed": 2, "replications": 2,
            "base": {"workload": "trace_replay"},
            "grid": {"kernel": ["6.18", "6.6"], "cost.syscall_ns": [4000, 8000],
                     "workload.seed": [1, 2]}}
    sweep = parse_sweep(data, tmp_path)
    pts = plan_sweep(sweep)
    from perfsim.batch.sweep import _resolve_cell, cells

    for ci, cell in enumerate(cells(sweep)):
        w, target, profile = _resolve_cell(sweep, cell)  # its own, fresh inputs
        for p in (p for p in pts if p.index == ci):
            assert (p.workload, p.target, p.profile) == (w, target, profile)
            assert (p.workload.digest, p.target.digest, p.profile.digest) == \
                (w.digest, target.digest, profile.digest)


def test_a_bad_knob_value_still_names_its_setting():
    spec = _spec(knobs={"workload.streams.0.count": [5, -3]})
    with pytest.raises(PerfsimError, match=r"sweep cell .*-3"):
        run_tune(spec, executor="serial", quiet=True)


# --------------------------------------------------------------------------- report tasks
def test_report_tasks_sharing_loaded_inputs_give_the_tables_they_give_alone():
    from perfsim.report import default_study
    from perfsim.report.runner import (
        ContentionTask,
        GridTask,
        WorkloadTask,
        plan_tasks,
        run_task,
        run_tasks,
    )

    tasks = plan_tasks(default_study())
    picked = [x for x in enumerate(tasks) if isinstance(x[1], GridTask)][:2]
    picked += [x for x in enumerate(tasks) if isinstance(x[1], ContentionTask)][:2]
    storms = [x for x in enumerate(tasks)
              if isinstance(x[1], WorkloadTask) and x[1].workload == "ipi_storm"]
    assert len({t.kernel for _, t in storms}) == 2  # the same workload on both kernels
    picked += [next(x for x in storms if x[1].kernel == k)
               for k in sorted({t.kernel for _, t in storms})]
    together = dict(run_tasks(picked))
    for i, t in picked:
        alone = run_task((i, t))[1]
        assert set(alone) == set(together[i])
        for name, df in alone.items():
            cols = [c for c in df.columns if c != "wall_s"]
            pd.testing.assert_frame_equal(together[i][name][cols], df[cols], obj=f"{t}: {name}")


def test_study_chunks_hold_every_task_once_longest_chunks_first():
    from perfsim.report import default_study
    from perfsim.report.runner import GridTask, _cost, plan_tasks, study_chunks

    tasks = plan_tasks(default_study())
    for workers in (1, 2, 8):
        chunks = study_chunks(tasks, workers)
        assert sorted(i for c in chunks for i, _ in c) == list(range(len(tasks)))
        assert all(tasks[i] is t for c in chunks for i, t in c)
        costs = [sum(_cost(t) for _, t in c) for c in chunks]
        assert costs == sorted(costs, reverse=True)
        assert all(len(c) == 1 for c in chunks if isinstance(c[0][1], GridTask))
        assert all(len({type(t) for _, t in c}) == 1 for c in chunks)
        assert max(len(c) for c in chunks) <= 8
