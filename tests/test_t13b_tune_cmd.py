"""``perfsim tune`` as a whole command (issue 13, fifth pass): what it loads and when."""

import os
import subprocess
import sys
import textwrap

import pytest


def _env_after(argv: list[str], env: dict | None = None) -> str:
    """OPENBLAS_NUM_THREADS as the command ``argv`` leaves it (run in a fresh interpreter,
    where numpy is not loaded yet)."""
    code = textwrap.dedent(f"""
        import os, sys
        from perfsim.cli.main import main
        main({argv!r})
        print("OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
              file=sys.stderr)
    """)
    full = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full, timeout=120)
    return out.stderr.strip().splitlines()[-1]


def test_a_command_without_linear_algebra_keeps_openblas_to_one_thread():
    assert _env_after(["tune", "--help"]) == "OPENBLAS_NUM_THREADS=1"
    assert _env_after(["report", "--help"]) == "OPENBLAS_NUM_THREADS=1"


def test_a_command_that_fits_keeps_the_default_blas_threads():
    assert _env_after(["calibrate", "--help"]) == "OPENBLAS_NUM_THREADS=unset"


def test_the_users_own_blas_setting_is_kept():
    assert _env_after(["tune", "--help"], {"OPENBLAS_NUM_THREADS": "2"}) == \
        "OPENBLAS_NUM_THREADS=2"


def test_main_called_where_numpy_is_loaded_leaves_the_environment_alone(monkeypatch):
    import numpy  # noqa: F401 - loaded, as in any program that calls main()

    from perfsim.cli.main import single_threaded_blas

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    single_threaded_blas("tune")
    assert "OPENBLAS_NUM_THREADS" not in os.environ


# --------------------------------------------------------------------------- figure process
KNOBS = {"one numeric knob": {"arch.tlb.single_page_flush_ceiling": [0, 33, 512]},
         "a numeric and a boolean knob": {"arch.tlb.single_page_flush_ceiling": [8, 64],
                                          "kernel.realign_pmd": [True, False]}}


def _small_tune(knobs=KNOBS["one numeric knob"]):
    from perfsim.tune import parse_tune, run_tune

    spec = parse_tune({"name": "fp", "workload": "ipi_storm", "seed": 5, "replications": 2,
                       "set": {f"workload.streams.mover-{i}.count": 3 for i in range(4)},
                       "knobs": knobs}, "test")
    return run_tune(spec, executor="serial", quiet=True)


def _files(d):
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("knobs", list(KNOBS))
def test_the_figure_process_writes_the_images_drawn_in_this_process(tmp_path, knobs):
    from perfsim.report import figures as F
    from perfsim.report.figure_process import FigureProcess, draw_here

    res = _small_tune(KNOBS[knobs])
    f, plot = F.tune_plot(res)
    (tmp_path / "here").mkdir()
    (tmp_path / "child").mkdir()
    draw_here(plot, tmp_path / "here", f.id)
    with FigureProcess().start() as fp:
        assert fp.draw(plot, tmp_path / "child", f.id).wait() == "process"
    assert _files(tmp_path / "here") == _files(tmp_path / "child")
    assert set(_files(tmp_path / "child")) == {f"figures/{f.id}.png", f"figures/{f.id}.svg"}


@pytest.mark.parametrize("knobs", list(KNOBS))
def test_fig_tune_is_tune_plot_drawn(tmp_path, knobs):
    from perfsim.report import figures as F
    from perfsim.report.figure_process import draw_here

    res = _small_tune(KNOBS[knobs])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    F.save(F.fig_tune(res), tmp_path / "a")
    f, plot = F.tune_plot(res)
    draw_here(plot, tmp_path / "b", f.id)
    F.save_data(f, tmp_path / "b")
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_a_figure_process_that_died_leaves_the_drawing_to_this_process(tmp_path):
    from perfsim.report import figures as F
    from perfsim.report.figure_process import FigureProcess

    res = _small_tune()
    f, plot = F.tune_plot(res)
    fp = FigureProcess().start()
    fp.proc.kill()
    fp.proc.join()
    assert fp.draw(plot, tmp_path, f.id).wait() == "here"
    fp.close()
    assert (tmp_path / f"figures/{f.id}.png").stat().st_size > 0
    assert (tmp_path / f"figures/{f.id}.svg").stat().st_size > 0


def test_a_closed_figure_process_has_exited():
    from perfsim.report.figure_process import FigureProcess

    fp = FigureProcess().start()
    fp.t_quantile(0.975, 2)  # answered: the child has imported and waits for requests
    proc = fp.proc
    fp.close()
    assert not proc.is_alive() and proc.exitcode == 0


def test_a_figure_process_closed_at_once_is_gone_too():
    from perfsim.report.figure_process import FigureProcess

    fp = FigureProcess().start()
    proc = fp.proc
    fp.close()  # perhaps still importing: told to exit, else killed
    assert not proc.is_alive() and fp.proc is None


def test_the_figure_process_imports_neither_pandas_nor_the_simulator():
    code = textwrap.dedent("""
        import sys
        from perfsim.report import figure_process, tune_figure
        for m in figure_process.IMPORTS:
            __import__(m)
        heavy = [m for m in ("pandas", "simpy", "perfsim.engine", "perfsim.planner",
                             "perfsim.report.figures", "perfsim.tune") if m in sys.modules]
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_figure_process_is_not_forked_beside_another_thread():
    import threading

    from perfsim.report.figure_process import fork_is_safe

    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not fork_is_safe()
    finally:
        stop.set()
        t.join()


def test_the_tune_command_report_is_the_same_with_and_without_a_figure_process(
        tmp_path, monkeypatch):
    from perfsim.cli.main import main
    from perfsim.report import figure_process

    args = ["tune", "--workload", "ipi_storm", "--knob",
            "arch.tlb.single_page_flush_ceiling=0,33,512", "--set",
            "workload.streams.mover-0.count=3", "--replications", "2", "--name", "fpcmd",
            "--executor", "serial", "--quiet"]
    drawn = []
    wait = figure_process._Job.wait
    monkeypatch.setattr(figure_process._Job, "wait", lambda job: drawn.append(wait(job)))
    monkeypatch.setattr(figure_process, "worth_starting", lambda: True)
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    monkeypatch.setattr(figure_process, "worth_starting", lambda: False)
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    assert drawn == ["process", "here"]
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert set(a) == set(b)
    for name in a:  # the run's date and wall time aside
        if name.endswith((".png", ".svg", ".csv")):
            assert a[name] == b[name], name


def _children(pid: int) -> list[int]:
    try:
        text = open(f"/proc/{pid}/task/{pid}/children").read()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _tune_with_a_pool(tmp_path) -> subprocess.Popen:
    """A tune long enough to interrupt, in its own process group, returned once its figure
    process (made first) and its 2-worker pool are running."""
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "perfsim", "tune", "--workload", "ipi_storm", "--knob",
         "arch.tlb.single_page_flush_ceiling=0,8,33,64,128,512", "--replications", "20",
         "--executor", "process:2", "--out", "reps"], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    t0 = time.monotonic()
    while len(_children(proc.pid)) < 3:  # the figure process and two workers
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < 120, "the pool never started"
        time.sleep(0.05)
    return proc


def test_ctrl_c_at_the_terminal_leaves_no_process_and_no_report(tmp_path):
    """SIGINT to the whole process group (what Ctrl-C at a terminal does): the command, its
    figure process and its pool's workers all stop; no report; the figure process says
    nothing; exit 130 (or death by the SIGINT itself when it lands in the interpreter's
    shutdown, as at 2c56c56). An idle pool worker's own KeyboardInterrupt traceback, printed
    by multiprocessing, is as at 2c56c56 and not this test's business."""
    import signal
    import time

    proc = _tune_with_a_pool(tmp_path)
    family = [proc.pid, *_children(proc.pid)]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "perfsim: interrupted" in err and "figure" not in err, err
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)
    assert not (tmp_path / "reps").exists() or not any((tmp_path / "reps").iterdir())
    time.sleep(0.5)
    alive = [p for p in family[1:] if os.path.exists(f"/proc/{p}")
             and open(f"/proc/{p}/stat").read().split(")")[1].split()[0] != "Z"]
    assert alive == [], alive


def test_a_worker_killed_from_outside_is_one_line_and_no_report(tmp_path):
    """A pool worker SIGKILLed mid-run (the OOM killer, an operator): one line saying so, exit
    1, no traceback and no report; the command waits a moment first, in case the death was a
    Ctrl-C on its way to this process too (then it reads as an interrupt, above)."""
    import signal

    proc = _tune_with_a_pool(tmp_path)
    os.kill(max(_children(proc.pid)), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("perfsim: error: a worker process ended abruptly"), err
    assert not (tmp_path / "reps").exists() or not any((tmp_path / "reps").iterdir())


def test_t_quantiles_from_the_figure_process_are_scipys_here():
    from perfsim.batch.stats import t_quantile
    from perfsim.report.figure_process import FigureProcess

    grid = [(p, df) for p in (0.5, 0.9, 0.95, 0.975, 0.995, 0.999_5)
            for df in (*range(1, 40), 57, 99, 250, 1_000, 123_456)]
    with FigureProcess().start() as fp:
        got = [fp.t_quantile(p, df) for p, df in grid]
        assert fp.conn is not None  # every one was answered by the child
    assert got == [t_quantile(p, df) for p, df in grid]


def test_a_dead_figure_process_leaves_the_t_quantiles_to_this_process():
    from perfsim.batch.stats import t_quantile
    from perfsim.report.figure_process import FigureProcess

    fp = FigureProcess().start()
    fp.proc.kill()
    fp.proc.join()
    assert fp.t_quantile(0.975, 4) == t_quantile(0.975, 4)
    assert fp.conn is None
    fp.close()


def test_the_analysis_with_the_figure_process_quantiles_is_the_analysis():
    from perfsim.report.figure_process import FigureProcess
    from perfsim.tune import analyze

    res = _small_tune(KNOBS["a numeric and a boolean knob"])
    with FigureProcess().start() as fp:
        other = analyze(res.spec, res.method, res.runs.drop(columns="objective"),
                        quantile=fp.t_quantile)
    for name in ("settings", "best", "sensitivity"):
        a, b = getattr(res, name), getattr(other, name)
        assert a.equals(b), name
    assert res.baseline == other.baseline


# --------------------------------------------------------------------------- quick exit
def _program(argv: list[str], prelude: str = "") -> subprocess.CompletedProcess:
    """``perfsim ARGV`` run as the program (``main()`` with no argument, as the console
    script does), with an atexit handler and an object whose finalizer only the
    interpreter's teardown runs; "main returned" when ``main`` returned (no quick exit)."""
    code = textwrap.dedent(f"""
        import atexit, sys
        sys.argv = ["perfsim", *{argv!r}]
        atexit.register(lambda: print("atexit handler ran", flush=True))
        class Finalized:
            def __del__(self):
                print("teardown ran", flush=True)
        kept = Finalized()
        {prelude}
        from perfsim.cli.main import main
        status = main()
        print("main returned", flush=True)  # the program's normal exit follows
        sys.exit(status)
    """)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


def test_the_tune_program_exits_with_its_status_after_the_atexit_handlers_and_no_teardown():
    out = _program(["tune", "--help"])
    assert out.returncode == 0
    assert "usage: perfsim tune" in out.stdout and out.stdout.rstrip().endswith(
        "atexit handler ran")
    assert "teardown ran" not in out.stdout and "main returned" not in out.stdout


def test_bad_input_to_the_tune_program_is_still_one_line_and_exit_2():
    out = _program(["tune", "no-such-tune.toml"])
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("perfsim: error:")
    assert "main returned" not in out.stdout


def test_a_running_thread_gets_the_normal_exit():
    out = _program(["tune", "--help"], "import threading, time; threading.Thread("
                   "target=time.sleep, args=(0.5,)).start()")
    assert out.returncode == 0 and "teardown ran" in out.stdout


def test_a_profiled_or_traced_program_gets_the_normal_exit():
    out = _program(["tune", "--help"], "sys.setprofile(lambda *a: None)")
    assert out.returncode == 0 and "main returned" in out.stdout
    out = _program(["tune", "--help"], "sys.settrace(lambda *a: None)")
    assert out.returncode == 0 and "main returned" in out.stdout


def test_other_commands_and_main_called_with_arguments_return():
    out = _program(["plan", "--help"])
    assert out.returncode == 0 and "main returned" in out.stdout
    code = ("import sys\nfrom perfsim.cli.main import main\n"
            "print('status', main(['tune', '--help']))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert got.stdout.rstrip().endswith("status 0")
