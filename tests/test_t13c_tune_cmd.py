"""``perfsim tune`` as a whole command (issue 13, sixth pass): the pool's workers make no
DataFrame, the command starts with nothing heavy loaded, imports run without the collector."""

import gc
import subprocess
import sys
import textwrap

import numpy as np
import pytest


def _points(n_settings=3, count=4):
    from perfsim.tune import parse_tune
    from perfsim.tune.search import grid_settings, settings_points

    spec = parse_tune({"name": "w", "workload": "ipi_storm", "seed": 11, "replications": 2,
                       "set": {f"workload.streams.mover-{i}.count": count for i in range(4)},
                       "knobs": {"arch.tlb.single_page_flush_ceiling":
                                 [0, 33, 512][:n_settings]}}, "test")
    return spec, settings_points(spec, grid_settings(spec))


def _run(p):
    from perfsim.workload.run import run_workload

    res, m, _ = run_workload(p.workload, target=p.target, profile=p.profile,
                             seed=np.random.SeedSequence(list(p.seed_entropy)),
                             max_rows=p.max_rows)
    return res, m


def test_run_metrics_from_record_columns_are_run_metrics_from_dataframes():
    from perfsim.tune.search import run_metrics

    _, pts = _points()
    for p in pts:
        res, m = _run(p)
        by_columns = run_metrics(res, m)
        assert res.columns("holds") is not None  # the columns path was taken
        res.holds, res.walker_waits  # noqa: B018 - the DataFrames made: now read from them
        assert res.columns("holds") is None
        assert run_metrics(res, m) == by_columns


def test_run_metrics_of_a_run_without_holds_or_waits_are_zero_percentiles():
    from perfsim.engine.simulate import SimResult
    from perfsim.tune.search import run_metrics

    class NoRows:
        run_totals: dict = {}
        column = SimResult.column  # (a result's column, read through columns below)

        def columns(self, name):
            return {}

    got = run_metrics(NoRows(), {"calls": 4, "ipis": 8})
    assert got["rmap_hold_p99_ns"] == got["walker_wait_p99_ns"] == 0.0
    assert got["ipis_per_call"] == 2.0


def test_a_pool_worker_simulates_without_pandas():
    code = textwrap.dedent("""
        import sys
        from perfsim.tune import parse_tune
        from perfsim.tune.search import evaluate_batch, grid_settings, settings_points
        spec = parse_tune({"name": "w", "workload": "ipi_storm", "replications": 2,
                           "set": {"workload.streams.mover-0.count": 2},
                           "knobs": {"arch.tlb.single_page_flush_ceiling": [0, 512]}}, "t")
        rows = evaluate_batch(settings_points(spec, grid_settings(spec)))
        assert all(r["status"] == "ok" for r in rows), rows
        print("pandas" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_the_tune_search_module_loads_no_pandas():
    code = "import sys, perfsim.tune; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "False", out.stderr


def test_the_command_line_starts_with_no_profile_model_loaded():
    code = ("import sys, perfsim, perfsim.cli.main; "
            "print(sorted(m for m in ('pydantic', 'numpy', 'perfsim.profiles') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("name", ["Target", "load_arch", "load_kernel", "resolve_target"])
def test_the_package_names_are_the_profiles_names(name):
    import perfsim
    import perfsim.profiles

    assert getattr(perfsim, name) is getattr(perfsim.profiles, name)
    assert name in perfsim.__all__


def test_an_unknown_package_name_is_an_attribute_error():
    import perfsim

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        perfsim.nope  # noqa: B018


def test_paused_gc_turns_the_collector_off_and_back_on():
    from perfsim.batch.executors import paused_gc

    assert gc.isenabled()
    with paused_gc():
        assert not gc.isenabled()
        with paused_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the inner block restores what it found
    assert gc.isenabled()


def test_paused_gc_leaves_a_disabled_collector_disabled():
    from perfsim.batch.executors import paused_gc

    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_paused_gc_restores_the_collector_after_an_error():
    from perfsim.batch.executors import paused_gc

    with pytest.raises(ValueError), paused_gc():
        raise ValueError("bad input")
    assert gc.isenabled()


def test_bad_input_leaves_the_collector_on(tmp_path):
    from perfsim.cli.main import main

    assert main(["tune", "--workload", "ipi_storm", "--knob", "no.such.knob=1,2",
                 "--out", str(tmp_path), "--executor", "serial", "--quiet"]) == 2
    assert gc.isenabled()


def test_the_prefetch_thread_imports_with_the_collector_paused_and_restores_it():
    import threading

    from perfsim.batch.executors import prefetch_imports

    seen = []
    t = prefetch_imports(["json"])
    t.join()
    probe = threading.Thread(target=lambda: seen.append(gc.isenabled()))
    probe.start()
    probe.join()
    assert seen == [True] and gc.isenabled()


def test_the_analysis_needs_scipy_only_beyond_the_table(monkeypatch):
    from perfsim.batch import t_table
    from perfsim.tune import parse_tune
    from perfsim.tune.search import analysis_needs_scipy

    def spec(reps):
        return parse_tune({"name": "s", "workload": "ipi_storm", "replications": reps,
                           "knobs": {"arch.tlb.single_page_flush_ceiling": [0, 8]}}, "t")

    monkeypatch.setattr(t_table, "installed_scipy_revision", lambda: t_table.SCIPY_REVISION)
    assert not analysis_needs_scipy(spec(3))
    assert not analysis_needs_scipy(spec(t_table.DF_MAX + 1))
    assert analysis_needs_scipy(spec(t_table.DF_MAX + 2))
    assert analysis_needs_scipy(spec(3), confidence=0.9)
    monkeypatch.setattr(t_table, "installed_scipy_revision", lambda: "other")
    assert analysis_needs_scipy(spec(3))


def test_the_tune_report_module_loads_no_study_runner():
    code = ("import sys, perfsim.report.tune_report; "
            "print(sorted(m for m in ('perfsim.report.runner', 'perfsim.report.study', "
            "'perfsim.report.build', 'perfsim.report.explain', 'matplotlib') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_the_study_report_keeps_its_tune_names():
    from perfsim.report import build, tune_report

    assert build.tune_section is tune_report.tune_section
    assert build.write_tune_report is tune_report.write_tune_report
    assert build.TUNE_NOTES is tune_report.TUNE_NOTES


def test_the_html_is_written_last_once_the_images_are_ready(tmp_path):
    from perfsim.report.write import Document, write_document

    (tmp_path / "data").mkdir()
    seen = []

    def ready():
        seen.append(sorted(p.name for p in tmp_path.iterdir()))

    doc = Document("t", "", [], [], {}, {}, {"date": "x"}, [])
    write_document(doc, tmp_path, images_ready=ready)
    assert seen == [["data", "provenance.json", "report.md"]]
    assert (tmp_path / "index.html").is_file()


def test_the_machine_line_reads_the_cpu_model_without_a_subprocess(monkeypatch):
    import platform

    from perfsim.report.provenance import machine

    calls = []
    monkeypatch.setattr(platform, "processor", lambda: calls.append(1) or "proc")
    line = machine()
    try:
        has_model = any(ln.startswith("model name")
                        for ln in open("/proc/cpuinfo").read().splitlines())
    except OSError:
        has_model = False
    assert calls == ([] if has_model else [1])
    assert line.count(" · ") == 4


def test_simulation_keys_are_each_points_simulation_key():
    from perfsim.tune import parse_tune
    from perfsim.tune.search import grid_settings, settings_points, simulation_key, simulation_keys

    spec = parse_tune({"name": "k", "workload": "ipi_storm", "seed": 2, "replications": 3,
                       "knobs": {"arch.tlb.single_page_flush_ceiling": [0, 33],
                                 "workload.streams.mover-0.count": [2, 5],
                                 "cost.ipi_round_trip_ns": [1500, 4000]}}, "test")
    pts = settings_points(spec, [{}]) + settings_points(spec, grid_settings(spec))
    keys = simulation_keys(pts)
    assert keys == [simulation_key(p) for p in pts]


def test_objects_made_in_a_paused_block_are_old_but_still_collected():
    from perfsim.batch.executors import paused_gc

    class Node:
        pass

    gc.collect()
    with paused_gc():
        kept = [Node() for _ in range(5_000)]
        a, b = Node(), Node()
        a.other, b.other = b, a  # a cycle, garbage once dropped
        del a, b
    assert gc.get_count()[0] < 1_000  # no young collection will walk the block's objects
    assert gc.get_freeze_count() == 0  # none is exempt from collection...
    assert gc.collect() >= 2  # ...a full one frees the cycle
    assert len(kept) == 5_000


def test_a_search_stopped_by_ctrl_c_does_not_wait_for_the_prefetch_thread(tmp_path,
                                                                          monkeypatch):
    """The loader is joined only after a completed search: a KeyboardInterrupt can leave
    the import lock taken, and the command would then wait for the loader forever."""
    import builtins
    import threading

    from perfsim.tune.search import run_tune

    gate = threading.Event()
    monkeypatch.setattr(builtins, "_t13c_gate", gate, raising=False)
    (tmp_path / "t13c_slow_import.py").write_text("import builtins\n"
                                                   "builtins._t13c_gate.wait(60)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Interrupted:
        workers = 2

        def map_unordered(self, fn, items):
            raise KeyboardInterrupt

    spec, _ = _points(n_settings=2, count=2)
    before = set(threading.enumerate())
    with pytest.raises(KeyboardInterrupt):
        run_tune(spec, executor=Interrupted(), quiet=True, prefetch=("t13c_slow_import",))
    loaders = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in loaders] == ["perfsim-prefetch"]
    assert loaders[0].is_alive()  # run_tune returned without waiting for it
    gate.set()
    loaders[0].join(60)
    sys.modules.pop("t13c_slow_import", None)


def _running(pids: list[int], wait_s: float = 5.0) -> list[int]:
    """Those of ``pids`` still running (not gone, not a zombie) after up to ``wait_s``."""
    import time

    def running(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + wait_s
    while (left := [p for p in pids if running(p)]) and time.monotonic() < deadline:
        time.sleep(0.01)
    return left


def test_closing_a_pool_kills_workers_its_shutdown_left_running(monkeypatch):
    from perfsim.batch.executors import ProcessExecutor

    ex = ProcessExecutor(2, start_method="auto")
    assert sorted(ex.map_unordered(abs, [-1, -2])) == [1, 2]
    workers = list(ex.pool._processes.values())
    assert workers and all(w.is_alive() for w in workers)
    shutdown = ex.pool.shutdown
    monkeypatch.setattr(ex.pool, "shutdown", lambda **kw: None)  # leaves them running
    ex.close()
    # Asked of the kernel, not of is_alive(): once the first worker is killed, the pool's
    # own thread finds the pool broken and terminates and reaps the other, and a waitpid
    # that loses that race leaves is_alive() answering True for a process already gone
    # (2 runs in 10 failed so, 2026-12-02).
    assert not _running([w.pid for w in workers])
    shutdown(wait=True, cancel_futures=True)
