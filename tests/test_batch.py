"""Batch runs: pure planning, executors give identical results, the store is content-addressed
and crash-safe, failures are data, paired statistics."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from orphans import descendants, left_after

from perfsim.batch import (
    load_results,
    make_executor,
    paired,
    parse_sweep,
    plan_sweep,
    replications_needed,
    run_sweep,
    t_quantile,
)
from perfsim.errors import PerfsimError

ROOT = Path(__file__).resolve().parents[1]

WORKLOAD = """
name = "tiny"
cpus = 2
[[processes]]
name = "app"
threads = 2
[[streams]]
name = "s"
process = "app"
count = 3
size = { dist = "loguniform", min = "1M", max = "16M", align = "4K" }
src_align = "page"
dst_align = "same"
file = "heap"
[[walkers]]
name = "kswapd"
anon = "heap"
cpus = [1]
interval_ns = 20000
hold_ns = 2000
hold_sigma = 0.3
"""


@pytest.fixture
def wl(tmp_path) -> Path:
    p = tmp_path / "tiny.toml"
    p.write_text(WORKLOAD)
    return p


def sweep_of(wl: Path, grid=None, reps=2, paired_=None, name="t"):
    data = {"name": name, "seed": 3, "replications": reps, "base": {"workload": str(wl)},
            "grid": grid if grid is not None else {"kernel.realign_pmd": [True, False]}}
    if paired_:
        data["paired"] = paired_
    return parse_sweep(data, wl.parent)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=["wall_s", "cpu_s"]).sort_values("key").reset_index(drop=True)


# --------------------------------------------------------------------------- planning
def test_plan_is_pure_and_complete(wl):
    s = sweep_of(wl, {"kernel.realign_pmd": [True, False], "cost.ipi_round_trip_ns": [1000, 3000],
                      "workload.streams.s.src_align": ["pmd", "page"]}, reps=3)
    a, b = plan_sweep(s), plan_sweep(s)
    assert len(a) == 2 * 2 * 2 * 3
    assert [p.key for p in a] == [p.key for p in b]
    assert len({p.key for p in a}) == len(a)
    # replication r of every cell shares its seed: common random numbers
    assert {p.seed_entropy for p in a if p.replication == 1} == {(3, 0, 1)}
    assert {p.target.kernel.realign_pmd for p in a} == {True, False}
    assert {p.profile.value("ipi_round_trip_ns") for p in a} == {1000, 3000}


def test_unknown_axis_and_bad_paired_arm(wl):
    with pytest.raises(PerfsimError, match="grid axis 'colour': unknown; allowed"):
        plan_sweep(sweep_of(wl, {"colour": [1]}))
    with pytest.raises(PerfsimError, match="unknown profile field 'kernel.nope'"):
        plan_sweep(sweep_of(wl, {"kernel.nope": [1]}))
    with pytest.raises(PerfsimError, match="paired.a = 'x' is not a value"):
        plan_sweep(sweep_of(wl, paired_=[{"axis": "kernel.realign_pmd", "a": "x", "b": False}]))
    with pytest.raises(PerfsimError, match=r"streams\[0\].src_align"):
        plan_sweep(sweep_of(wl, {"workload.streams.s.src_align": ["sideways"]}))


def test_sweep_file_unknown_key(wl):
    with pytest.raises(PerfsimError, match="replicatons: unknown key .replicatons.; allowed keys: name"):
        parse_sweep({"name": "x", "replicatons": 3, "base": {"workload": str(wl)}}, wl.parent)


# --------------------------------------------------------------------------- executors
def test_results_identical_across_executors(wl, tmp_path):
    s = sweep_of(wl)
    frames = {}
    for spec, bs in (("serial", 4), ("process:2", 1), ("process:1", 3)):
        rep = run_sweep(s, tmp_path / spec.replace(":", "_"), executor=spec, batch_size=bs,
                        quiet=True)
        assert rep.ran == 4 and rep.failed == 0
        frames[spec] = comparable(load_results(rep.path))
    for spec in frames:
        pd.testing.assert_frame_equal(frames[spec], frames["serial"])


def test_results_identical_on_dask_localcluster(wl, tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed not installed (perfsim[dask])")
    s = sweep_of(wl)
    ref = run_sweep(s, tmp_path / "serial", executor="serial", quiet=True)
    ex = make_executor("dask-local:2")
    try:
        assert ex.workers == 2
        rep = run_sweep(s, tmp_path / "dask", executor=ex, batch_size=1, quiet=True)
    finally:
        ex.close()
    assert rep.ran == 4
    pd.testing.assert_frame_equal(comparable(load_results(rep.path)),
                                  comparable(load_results(ref.path)))


# --------------------------------------------------------------------------- store
def test_rerun_skips_finished_points_and_loads_in_one_line(wl, tmp_path):
    s = sweep_of(wl)
    first = run_sweep(s, tmp_path, executor="serial", quiet=True)
    again = run_sweep(s, tmp_path, executor="serial", quiet=True)
    assert (first.ran, again.ran, again.skipped) == (4, 0, 4)
    df = pd.read_parquet(tmp_path / "t")
    assert len(df) == 4 and df["key"].is_unique
    for col in ("workload_digest", "target_digest", "cost_digest", "seed", "perfsim_version",
                "p:kernel.realign_pmd", "lat_mean_ns"):
        assert col in df.columns
    # widening the grid runs only the new points
    wider = sweep_of(wl, {"kernel.realign_pmd": [True, False]}, reps=3)
    assert run_sweep(wider, tmp_path, executor="serial", quiet=True).ran == 2


def test_failed_point_is_stored_with_its_message(wl, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(WORKLOAD.replace("[[walkers]]", """
[[streams]]
name = "replay"
kind = "trace"
process = "app"
thread = 1
path = "missing.csv"
[[walkers]]"""))
    s = parse_sweep({"name": "f", "base": {"workload": str(bad)},
                     "grid": {"workload.streams.s.count": [1]}}, tmp_path)
    rep = run_sweep(s, tmp_path / "out", executor="serial", quiet=True)
    assert (rep.ran, rep.failed) == (1, 1)
    df = load_results(rep.path)
    assert df.loc[0, "status"] == "failed" and "missing.csv" in df.loc[0, "error"]
    assert run_sweep(s, tmp_path / "out", executor="serial", quiet=True).ran == 0
    assert run_sweep(s, tmp_path / "out", executor="serial", quiet=True, retry_failed=True).ran == 1


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    import perfsim.batch.api as api
    import perfsim.batch.runner as runner
    from perfsim.batch import parse_sweep, run_sweep
    from pathlib import Path
    api.FLUSH_ROWS = 1                       # one part per finished batch
    slow = runner.run_point
    def run_point(p, caches=None):           # slow enough to be killed mid-sweep
        time.sleep(0.15)
        return slow(p, caches)
    runner.run_point = run_point
    wl = Path(sys.argv[1])
    s = parse_sweep({"name": "crash", "seed": 1, "replications": 6, "base": {"workload": str(wl)},
                     "grid": {"kernel.realign_pmd": [True, False]}}, wl.parent)
    run_sweep(s, sys.argv[2], executor="serial", batch_size=1, quiet=True)
""")


def test_kill_9_mid_sweep_then_rerun_loses_and_duplicates_nothing(wl, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(wl), str(out)], env=env)
    ds = out / "crash"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(ds.glob("part-*.parquet"))) < 3:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    parts_before = list(ds.glob("part-*.parquet"))
    assert 3 <= len(parts_before) < 12, "the kill must land mid-sweep"
    for p in parts_before:  # every part on disk is complete and readable
        pd.read_parquet(p)
    s = parse_sweep({"name": "crash", "seed": 1, "replications": 6, "base": {"workload": str(wl)},
                     "grid": {"kernel.realign_pmd": [True, False]}}, wl.parent)
    rep = run_sweep(s, out, executor="serial", quiet=True)
    assert rep.skipped == len(pd.concat(pd.read_parquet(p) for p in parts_before))
    assert rep.skipped + rep.ran == 12
    df = pd.read_parquet(ds)
    assert len(df) == 12 and df["key"].is_unique
    assert not list(ds.glob(".tmp-*"))
    clean = run_sweep(s, tmp_path / "clean", executor="serial", quiet=True)
    pd.testing.assert_frame_equal(comparable(load_results(ds)),
                                  comparable(load_results(clean.path)))


# --------------------------------------------------------------------------- statistics
def test_t_quantile_known_values():
    # standard table values
    for p, df, t in ((0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 5, 2.571),
                     (0.975, 9, 2.262), (0.975, 30, 2.042), (0.95, 10, 1.812)):
        assert t_quantile(p, df) == pytest.approx(t, abs=2e-3)


def test_t_quantile_is_the_exact_inverse_cdf():
    # values of the inverse t CDF to 10 digits (standard references); df 1 is tan(pi (p - 1/2))
    for p, df, t in ((0.975, 1, 12.7062047362), (0.975, 3, 3.1824463053),
                     (0.975, 9, 2.2621571628), (0.995, 4, 4.6040948713)):
        assert t_quantile(p, df) == pytest.approx(t, abs=1e-9)
    assert math.isnan(t_quantile(0.975, 0))


def test_paired_difference_ratio_and_needed_replications():
    rng = np.random.default_rng(0)
    common = rng.normal(1000, 100, 50)  # what both arms share (common random numbers)
    a = common * 1.1 + rng.normal(0, 5, 50)
    b = common
    r = paired(a, b, confidence=0.95, precision=0.01)
    assert r["n"] == 50
    assert r["diff_lo"] < r["diff"] < r["diff_hi"]
    assert r["diff_lo"] < 100 < r["diff_hi"] or abs(r["diff"] - 100) < 10
    assert r["ratio_lo"] < 1.1 < r["ratio_hi"] or abs(r["ratio"] - 1.1) < 0.01
    half = 0.01 * b.mean()
    n = r["n_needed"]
    sd = r["sd_diff"]
    assert t_quantile(0.975, n - 1) * sd / math.sqrt(n) <= half
    assert n == 2 or t_quantile(0.975, n - 2) * sd / math.sqrt(n - 1) > half
    assert replications_needed(sd, half / 2) > n


def test_paired_sweep_reports_crn_comparison(wl, tmp_path):
    s = sweep_of(wl, {"kernel.realign_pmd": [True, False]}, reps=3,
                 paired_=[{"axis": "kernel.realign_pmd", "a": True, "b": False,
                           "metric": "lat_mean_ns"}])
    rep = run_sweep(s, tmp_path, executor="serial", quiet=True)
    t = rep.paired[0]
    assert len(t) == 1 and t.loc[0, "n"] == 3
    # realignment saves the head PTE copies of every mutually aligned, PMD-unaligned move
    assert t.loc[0, "diff"] < 0 and t.loc[0, "ratio"] < 1
    assert (tmp_path / "t" / "_paired.csv").is_file()


def test_cli_sweep_from_flags(wl, tmp_path, capsys):
    from perfsim.cli.main import main

    rc = main(["sweep", "--workload", str(wl), "--grid", "kernel=6.6,6.18", "--pair",
               "kernel=6.18,6.6", "--replications", "2", "--executor", "serial",
               "--out", str(tmp_path), "--name", "cli"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "paired kernel: 6.18 vs 6.6" in out and "replications needed" in out
    assert len(pd.read_parquet(tmp_path / "cli")) == 4
    assert main(["sweep", str(ROOT / "sweeps" / "kernels_ab.toml"), "--dry-run"]) == 0


# --------------------------------------------------------------------------- executors
ORPHAN_SCRIPT = textwrap.dedent("""
    import time
    from perfsim.batch.executors import ProcessExecutor
    ex = ProcessExecutor(2)
    futures = [ex.pool.submit(time.sleep, 120) for _ in range(4)]
    print("ready", flush=True)
    time.sleep(120)
""")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_pool_processes_exit_when_their_creator_is_killed():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", ORPHAN_SCRIPT], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        kids: set[int] = set()
        # forkserver + resource tracker + 2 workers
        while time.monotonic() < deadline and len(kids) < 4:
            time.sleep(0.1)
            kids = descendants(proc.pid)
        assert len(kids) >= 4, kids
        time.sleep(0.5)  # let the workers run their initializer
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = left_after(kids)
    assert not left, f"orphans still running after their creator's kill -9: {left}"


@pytest.mark.parametrize("spec", ["bogus", "process:0", "process:x", "dask://"])
def test_bad_executor_fails_before_anything_is_written(wl, tmp_path, spec):
    with pytest.raises(PerfsimError, match="--executor"):
        run_sweep(sweep_of(wl), tmp_path / "out", executor=spec, quiet=True)
    assert not (tmp_path / "out").exists()


def test_unreachable_dask_scheduler_is_one_line_error_quickly():
    pytest.importorskip("distributed")
    from perfsim.batch.executors import DASK_CONNECT_TIMEOUT_S

    t0 = time.monotonic()
    with pytest.raises(PerfsimError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        make_executor("dask://127.0.0.1:1")
    # Bounded by the connect timeout (not the 30 s it used to wait), with slack for a busy host.
    assert time.monotonic() - t0 < DASK_CONNECT_TIMEOUT_S + 20
