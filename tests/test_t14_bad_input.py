"""Bad input that still ended in a traceback, a hang, an exhausted memory, a silently wrong
answer or a destroyed input (found by a fuzzing driver, 2026-12-02): each is now one line
``perfsim: error: ...`` naming the file, flag or field and what is allowed, exit status 2,
nothing written. One test per rule; the command-line ones go through the helpers of
tests/test_bad_input.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_bad_input import assert_one_line, cli, listing

from perfsim.errors import PerfsimError

ROOT = Path(__file__).resolve().parents[1]
SCENARIO = (ROOT / "workloads" / "scenarios" / "gc-compaction-reclaim.toml").read_text()
IPI_STORM = (ROOT / "workloads" / "ipi_storm.toml").read_text()
QUICK = (ROOT / "studies" / "quick.toml").read_text()
TUNE = (ROOT / "studies" / "tune_flush_ceiling.toml").read_text()
SWEEP = (ROOT / "sweeps" / "realign_on_off.toml").read_text()
WL_SIZE = 'size = { dist = "loguniform", min = "16K", max = "1M", align = "4K" }'


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edited(text: str, old: str, new: str) -> str:
    out = text.replace(old, new, 1)
    assert out != text, old
    return out


def write(d: Path, name: str, text: str) -> str:
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)
    return name


def no_work(monkeypatch):
    def fail(*a, **kw):
        raise AssertionError("the work started before the input was checked")

    for mod, fn in (("perfsim.engine", "simulate"), ("perfsim.workload", "run_workload"),
                    ("perfsim.report", "make_report"), ("perfsim.tune", "run_tune"),
                    ("perfsim.batch.api", "run_sweep")):
        monkeypatch.setattr(f"{mod}.{fn}", fail)


# --------------------------------------------------------------------------- outputs

@pytest.mark.parametrize("argv", [
    ["run", "s.toml", "--out", ""],
    ["workload", "run", "w.toml", "--out", ""],
    ["report", "--trace-call", "unaligned:8M", "-o", ""],
    ["report", "--study", "quick", "--out", ""],
    ["tune", "--workload", "trace_replay", "--knob", "kernel.realign_pmd=true,false", "--out="],
    ["report", "--trace-call", ""],
    ["plan", "--old-len", "2M", "--old-addr", "A", "--new-addr", "B", "--kernel", ""],
    ["sweep", "--workload", "trace_replay", "--grid", ""],
])
def test_an_empty_option_value_is_refused_not_taken_as_not_given(here, capsys, monkeypatch,
                                                                 argv):
    """``--out ""`` wrote to the default place; ``report --trace-call ""`` ran the whole
    default study."""
    no_work(monkeypatch)
    write(here, "s.toml", SCENARIO)
    write(here, "w.toml", IPI_STORM)
    before = listing(here)
    rc, out, err = cli(capsys, *argv)
    assert_one_line(rc, out, err, "'': an empty value", f"see 'perfsim {argv[0]}")
    assert listing(here) == before and out == ""


@pytest.mark.parametrize("argv, inp", [
    (["run", "in/s.toml", "--out", "in", "--force"], "in/s.toml"),
    (["run", "s.toml", "--out", "s.toml", "--force"], "s.toml"),
    (["workload", "run", "in/w.toml", "--out", "in", "--force", "-q"], "in/w.toml"),
    (["workload", "convert-strace", "app.strace", "-o", "app.strace", "--force"], "app.strace"),
])
def test_force_never_replaces_the_commands_own_input(here, capsys, monkeypatch, argv, inp):
    from test_bad_input import STRACE

    no_work(monkeypatch)
    write(here, "in/s.toml", SCENARIO)
    write(here, "s.toml", SCENARIO)
    write(here, "in/w.toml", IPI_STORM)
    write(here, "app.strace", STRACE)
    before = {p: (here / p).read_bytes() for p in listing(here) if (here / p).is_file()}
    rc, out, err = cli(capsys, *argv)
    assert_one_line(rc, out, err, "the input '", f"{inp}'", "somewhere else")
    assert {p: (here / p).read_bytes() for p in listing(here) if (here / p).is_file()} == before


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize("argv", [
    ["sweep", "--workload", "trace_replay", "--executor", "serial", "--name", ".."],
    ["sweep", "--workload", "trace_replay", "--executor", "serial", "--name", "."],
    ["report", "--study", "quick", "--executor", "serial", "--out", "o", "--name", ".."],
    ["report", "--study", "quick", "--executor", "serial", "--out", "o", "--name", "."],
])
def test_dot_and_dot_dot_are_not_directory_names(here, capsys, monkeypatch, argv):
    no_work(monkeypatch)
    assert_one_line(*cli(capsys, *argv), "--name", "not '.' or '..'")
    assert listing(here) == set()


# --------------------------------------------------------------------------- scenarios

@pytest.mark.parametrize("old, new, needle", [
    ("seed = 1", "seed = -1", "seed -1"),
    ("cpus = [0, 1]", "cpus = [0, 5]", "cpu 5 out of range"),
    ('name = "mutator"\nprocess = "jvm"', 'name = "mutator"\nprocess = "x"', "unknown mm 'x'"),
])
def test_scenario_run_checks_are_one_line_naming_the_file_before_progress(here, capsys, old,
                                                                          new, needle):
    write(here, "s.toml", edited(SCENARIO, old, new))
    rc, out, err = cli(capsys, "run", "s.toml", "--out", "o")  # progress on: it must not start
    assert_one_line(rc, out, err, "scenario s.toml:", needle)
    assert listing(here) == {"s.toml"}


@pytest.mark.parametrize("old, new, needle", [
    ('start = "0x7f0000200000"', 'start = "0x7f0000200001"', "must be page aligned"),
    ('size = "64M"', 'size = "1P"', "at most 0x40000000000 bytes (4T) faulted in"),
    ('start = "0x7f0000200000"', 'start = "0xfffffffffff000"', "user address range"),
])
def test_a_vma_is_page_aligned_in_user_space_and_not_too_big_to_populate(here, capsys, old,
                                                                          new, needle):
    write(here, "s.toml", edited(SCENARIO, old, new))
    assert_one_line(*cli(capsys, "run", "s.toml", "--out", "o"), "s.toml",
                    "processes[0].vmas[0]", needle)
    assert listing(here) == {"s.toml"}


def test_an_unpopulated_huge_vma_is_still_allowed():
    from perfsim.workload.schema import VmaBase

    assert VmaBase(name="v", start=1 << 40, size=64 << 40, populate=0.0).size == 64 << 40
    with pytest.raises(ValueError, match="faulted in"):
        VmaBase(name="v", start=1 << 40, size=64 << 40, populate=0.5)


# --------------------------------------------------------------------------- workloads

@pytest.mark.parametrize("new, needle", [
    ('size = { dist = "choice", values = ["4K", "8K"], weights = [nan, 1] }', "weights: nan"),
    ('size = { dist = "choice", values = ["4K", "8K"], weights = [inf, 1] }', "weights: inf"),
    ('size = { dist = "loguniform", min = "16K", max = "1M", align = "3K" }',
     "not a whole number of pages"),
    ('size = { dist = "loguniform", min = "16K", max = "1M", align = 0 }', "align: 0"),
])
def test_distribution_numbers_are_finite_and_size_alignment_is_whole_pages(here, capsys, new,
                                                                           needle):
    write(here, "w.toml", edited(IPI_STORM, WL_SIZE, new))
    assert_one_line(*cli(capsys, "workload", "validate", "w.toml"), "w.toml: streams[0].size",
                    needle)


def test_a_number_distribution_refuses_nan():
    from pydantic import TypeAdapter

    from perfsim.workload.dist import NumDist

    with pytest.raises(ValueError, match="min: nan is not a finite number"):
        TypeAdapter(NumDist).validate_python({"dist": "uniform", "min": float("nan"), "max": 1})


@pytest.mark.parametrize("rate", ["1e-300", "inf", "1e300"])
def test_a_poisson_rate_is_bounded_and_finite(here, capsys, monkeypatch, rate):
    no_work(monkeypatch)
    write(here, "w.toml", IPI_STORM.replace("rate_per_s = 50000", f"rate_per_s = {rate}"))
    assert_one_line(*cli(capsys, "workload", "run", "w.toml", "-q"), "w.toml",
                    "streams[2].arrival.rate_per_s")


def test_open_loop_calls_are_bounded_before_memory_runs_out(here, capsys, monkeypatch):
    """count = 10,000,000 on ipi_storm's Poisson streams grew by 100 MB/s, silently."""
    no_work(monkeypatch)
    write(here, "w.toml", IPI_STORM.replace("count = 100\n", "count = 150000\n"))
    assert_one_line(*cli(capsys, "workload", "run", "w.toml"), "w.toml: streams[3]",
                    "300,000 calls", "at most 200,000 open-loop calls")


def test_open_loop_calls_of_a_duration_count_too():
    from perfsim.workload.schema import parse_workload

    text = IPI_STORM.replace("count = 100\n", "")
    with pytest.raises(PerfsimError, match="at most 200,000 open-loop"):
        parse_workload(text.replace("cpus = 32\n", 'cpus = 32\nduration_ns = "10s"\n'))
    # 2 streams × 50,000/s × 1 s = 100,000: allowed (the closed streams are not counted)
    parse_workload(text.replace("cpus = 32\n", 'cpus = 32\nduration_ns = "1s"\n'))


@pytest.mark.parametrize("line, needle", [
    ('kernel = "zz"', "unknown kernel profile 'zz'"),
    ('cost_profile = "zz"', "unknown cost profile 'zz'"),
    ('kernel = "/etc/passwd"', "/etc/passwd"),
])
def test_workload_validate_checks_the_profiles_it_names(here, capsys, line, needle):
    write(here, "w.toml", IPI_STORM.replace("cpus = 32\n", f"cpus = 32\n{line}\n"))
    rc, out, err = cli(capsys, "workload", "validate", "w.toml")
    assert_one_line(rc, out, err, "w.toml", needle)
    assert "ok" not in out


# --------------------------------------------------------------------------- sweeps

def test_a_repeated_grid_axis_on_the_command_line_is_refused(here, capsys, monkeypatch):
    no_work(monkeypatch)
    assert_one_line(*cli(capsys, "sweep", "--workload", "trace_replay", "--dry-run",
                         "--grid", "kernel.realign_pmd=true", "--grid",
                         "kernel.realign_pmd=false"),
                    "axis 'kernel.realign_pmd' is already given", "joined by commas")


@pytest.mark.parametrize("old, new, needle", [
    ('"kernel.realign_pmd" = [true, false]', '"kernel.realign_pmd" = [true, true]',
     "lists the value True twice"),
    ("a = true", "a = false", "two different arms"),
    ('metric = "lat_mean_ns"', 'metric = "lat_mean"', "unknown metric 'lat_mean'"),
])
def test_sweep_grid_values_distinct_and_pairs_of_two_arms_on_a_known_metric(here, capsys, old,
                                                                            new, needle):
    write(here, "s.toml", edited(SWEEP, old, new))
    assert_one_line(*cli(capsys, "sweep", "s.toml", "--dry-run"), "s.toml", needle)


@pytest.mark.parametrize("spec, needle", [
    ("process:100000", "from 1 to 256"),
    ("dask-local:5000", "from 1 to 256"),
    ("serial:3", "takes no worker count"),
])
def test_executor_worker_counts_are_bounded(spec, needle):
    from perfsim.batch.executors import parse_executor

    with pytest.raises(PerfsimError, match=needle):
        parse_executor(spec)
    assert parse_executor("process:256") == ("process", 256)


# --------------------------------------------------------------------------- tune

@pytest.mark.parametrize("old, new, needle", [
    ('metric = "mean"', "weights = { mean = nan }", "a weight must be a finite number > 0"),
    ('metric = "mean"', "weights = { mean = -1 }", 'direction = "maximize"'),
    ('metric = "mean"', "weights = { mean = 0, p99 = 1 }", "weights.mean = 0.0"),
    ("[0, 8, 33,", "[0, 0, 33,", "lists the value 0 twice"),
    ('"workload.streams.mover-0.count" = 25',
     '"arch.tlb.single_page_flush_ceiling" = 25', "both in set"),
    ('"arch.tlb.single_page_flush_ceiling" = [0, 8, 33, 64, 128, 512]',
     '"arch.tlb.single_page_flush_ceiling" = { min = 0, max = inf }', "finite numbers"),
])
def test_tune_file_weights_knob_values_and_set(here, capsys, monkeypatch, old, new, needle):
    no_work(monkeypatch)
    write(here, "t.toml", edited(TUNE, old, new))
    assert_one_line(*cli(capsys, "tune", "t.toml", "--executor", "serial", "--quiet"), needle)
    assert listing(here) == {"t.toml"}


@pytest.mark.parametrize("extra, needle", [
    (["--knob", "kernel.realign_pmd=true", "--knob", "kernel.realign_pmd=false"],
     "'kernel.realign_pmd' is already given by --knob"),
    (["--knob", "kernel.realign_pmd=true,false", "--set", "kernel.realign_pmd=true"],
     "already given by --knob"),
])
def test_tune_command_line_gives_each_knob_once(here, capsys, monkeypatch, extra, needle):
    no_work(monkeypatch)
    assert_one_line(*cli(capsys, "tune", "--workload", "trace_replay", "--executor", "serial",
                         *extra), needle)


def test_tune_set_on_the_command_line_fixes_a_knob_of_the_file(here, capsys, monkeypatch):
    from perfsim.cli.main import build_parser
    from perfsim.cli.tune import build_spec

    argv = ["tune", "tune_flush_ceiling", "--set", "arch.tlb.single_page_flush_ceiling=8",
            "--knob", "workload.seed=1,2"]
    spec = build_spec(build_parser(argv).parse_args(argv))
    assert spec.set["arch.tlb.single_page_flush_ceiling"] == 8
    assert list(spec.knobs) == ["workload.seed"]


# --------------------------------------------------------------------------- studies

@pytest.mark.parametrize("old, new, needle", [
    ('reference_size = "1G"', "reference_size = 0", "reference_size: 0x0"),
    ('sizes = ["4K", "1M", "2M", "8M", "64M", "1G"]', "sizes = []", "calls.sizes: empty"),
    ('sizes = ["4K"', 'sizes = ["3K"', "calls.sizes: 0xc00 is not a whole number of pages"),
    ('sizes = ["4K"', 'sizes = ["1P"', "calls.sizes: 0x4000000000000 is too large"),
    ('reference_size = "1G"', 'reference_size = "1P"', "reference_size: 0x4000000000000"),
    ('size = "8M"', "size = 0", "traces[0].size"),
    ('kernel = "6.18"\nthreads = 2', 'kernel = "zz"\nthreads = 2',
     "traces[0].kernel: unknown kernel profile 'zz'"),
])
def test_study_sizes_and_trace_kernels_are_checked_when_read(here, capsys, monkeypatch, old,
                                                             new, needle):
    no_work(monkeypatch)
    write(here, "s.toml", edited(QUICK, old, new))
    assert_one_line(*cli(capsys, "report", "--study", "s.toml", "--out", "o"), "s.toml", needle)
    assert listing(here) == {"s.toml"}


def test_a_half_octave_size_range_keeps_whole_pages():
    from perfsim.report.study import SizeRange

    assert SizeRange(min="4K", max="64K", per_octave=2).values() == [
        4096, 8192, 12288, 16384, 24576, 32768, 49152, 65536]


# --------------------------------------------------------------------------- calibration data

@pytest.mark.parametrize("line, needle", [
    ("[1, 2]", "a JSON list, not an object"),
    ('"x"', "a JSON str, not an object"),
    ('{"kind": "rep", "config_id": "c", "threads": 1, "src": 0, "dst": 0}',
     "'latency_ns' is missing"),
    ('{"kind": "rep", "config_id": 5, "latency_ns": 1, "threads": 1, "src": 0, "dst": 0}',
     "'config_id' is 5; allowed: str"),
])
def test_calibration_data_lines_are_objects_with_the_repetition_keys(here, capsys, line, needle):
    src = (ROOT / "tests" / "data" / "calib" / "host-6.18.data.jsonl").read_text().splitlines()
    write(here, "d.jsonl", "\n".join([src[0], line]) + "\n")
    assert json.loads(src[0])["kind"] == "header"
    assert_one_line(*cli(capsys, "calibrate", "--from-data", "d.jsonl", "--out", "p.toml"),
                    "d.jsonl:2", needle)
    assert_one_line(*cli(capsys, "validate", "--cost", "x86_64-generic", "--data", "d.jsonl"),
                    "d.jsonl:2", needle)
    assert listing(here) == {"d.jsonl"}


# --------------------------------------------------------------------------- Python API

@pytest.mark.parametrize("kernel, arch", [(None, "x86_64"), (6.18, "x86_64"), ("6.18", 64)])
def test_resolve_target_of_a_wrong_type_is_a_type_error_naming_it(kernel, arch):
    from perfsim.profiles import resolve_target

    with pytest.raises(TypeError, match=r"expected a name \(.*\) or a path to a \.toml file"):
        resolve_target(kernel, arch)


def test_a_profile_path_that_is_a_directory_says_so(tmp_path):
    from perfsim.profiles import load_kernel

    (tmp_path / "k.toml").mkdir()
    with pytest.raises(PerfsimError, match="is a directory, not a file"):
        load_kernel(str(tmp_path / "k.toml"))


def test_load_results_of_a_missing_path_or_a_file_is_an_error_not_an_empty_frame(tmp_path):
    from perfsim.batch import load_results

    with pytest.raises(PerfsimError, match="'.*nope' does not exist"):
        load_results(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(PerfsimError, match="is a file, not a directory"):
        load_results(tmp_path / "f")
    assert load_results(tmp_path).empty  # a results directory with no rows yet


# --------------------------------------------------------------------------- output places

def test_force_never_renames_a_result_over_a_device(here, capsys, tmp_path):
    """``-o /dev/full --force`` replaced the device with a regular file (a result is written
    beside its place and renamed over it). A named pipe stands in for the device here."""
    import os

    os.mkfifo(here / "pipe")
    rc, out, err = cli(capsys, "report", "--trace-call", "unaligned:8M", "-o", "pipe", "--force")
    assert_one_line(rc, out, err, "'pipe' is a named pipe, not a regular file")
    assert (here / "pipe").is_fifo()
    rc, out, err = cli(capsys, "workload", "convert-strace", str(ROOT / "tests" / "data" /
                                                                 "realloc.strace"),
                       "-o", "pipe", "--force")
    assert_one_line(rc, out, err, "'pipe' is a named pipe, not a regular file")
    assert (here / "pipe").is_fifo()


def test_a_character_device_is_named_as_one():
    """(Checked without --force, so that a tree without the check cannot replace it.)"""
    from perfsim.errors import check_output_file

    with pytest.raises(PerfsimError, match="'/dev/null' is a character device"):
        check_output_file("/dev/null", "-o")


@pytest.mark.parametrize("argv", [
    ["run", "s.toml", "--out", "ln"],
    ["report", "--trace-call", "unaligned:8M", "-o", "ln"],
])
def test_a_dangling_symlink_as_output_is_refused_before_work(here, capsys, monkeypatch, argv):
    import os

    no_work(monkeypatch)
    write(here, "s.toml", SCENARIO)
    os.symlink("/nonexistent/place", here / "ln")
    assert_one_line(*cli(capsys, *argv), "'ln' is a symbolic link to '/nonexistent/place'",
                    "does not exist")


# --------------------------------------------------------------------------- profiles, durations

def test_a_cost_parameter_is_at_most_1000_seconds(here, capsys):
    text = (ROOT / "perfsim" / "data" / "cost" / "x86_64-generic.toml").read_text()
    write(here, "c.toml", edited(text, "ns = 12200", "ns = 1_000_000_000_000_000"))
    assert_one_line(*cli(capsys, "plan", "--old-len", "2M", "--old-addr", "A", "--new-addr", "B",
                         "--cost-profile", "c.toml"), "c.toml", "syscall_ns", "1000000000000")


def test_a_duration_fits_simulated_time():
    from perfsim.units import parse_duration

    assert parse_duration("3600s") == 3_600_000_000_000
    for text in ("99999999999s", 2**63):
        with pytest.raises(PerfsimError, match=r"too long; allowed: at most 2\*\*62 ns"):
            parse_duration(text)


@pytest.mark.parametrize("old, new, needle", [
    ("user_va_top = 0x7ffffffff000", "user_va_top = 0x7ffffffff001", "must be page aligned"),
    ("user_va_top = 0x7ffffffff000", "user_va_top = 0xfffffffffffff000",
     "above what 4 levels map"),
])
def test_an_arch_profiles_user_range_is_page_aligned_and_mappable(here, capsys, old, new,
                                                                  needle):
    text = (ROOT / "perfsim" / "data" / "arch" / "x86_64.toml").read_text()
    write(here, "a.toml", edited(text, old, new))
    assert_one_line(*cli(capsys, "plan", "--old-len", "2M", "--old-addr", "A", "--new-addr", "B",
                         "--arch", "a.toml", "--force-cost-profile"), "a.toml", needle)


def test_a_kernel_profiles_version_is_not_negative(here, capsys):
    text = (ROOT / "perfsim" / "data" / "kernels" / "6.18.toml").read_text()
    write(here, "k.toml", edited(text, "version = [6, 18]", "version = [-6, 18]"))
    assert_one_line(*cli(capsys, "plan", "--old-len", "2M", "--old-addr", "A", "--new-addr", "B",
                         "--kernel", "k.toml"), "k.toml", "version")


@pytest.mark.parametrize("text", ["", "\n\n"])
def test_groundtruth_compare_of_no_records_is_an_error_not_all_agree(here, capsys, text):
    write(here, "e.jsonl", text)
    assert_one_line(*cli(capsys, "groundtruth", "--compare", "e.jsonl"), "'e.jsonl'",
                    "no records")


# --------------------------------------------------------------------------- plan

def test_plan_seed_is_not_negative_on_the_command_line_or_in_a_file(here, capsys):
    """``--seed -1 --populate 0.5`` was a numpy traceback."""
    call = ["plan", "--old-len", "2M", "--old-addr", "A", "--new-addr", "B", "--populate", "0.5"]
    assert_one_line(*cli(capsys, *call, "--seed", "-1"), "--seed", "an integer >= 0")
    write(here, "r.toml", 'old_addr = "A"\nold_len = "2M"\nnew_addr = "B"\npopulate = 0.5\n'
                          "seed = -1\n")
    assert_one_line(*cli(capsys, "plan", "--file", "r.toml"), "r.toml", "'seed'",
                    "an integer >= 0")


def test_groundtruth_out_replaces_an_existing_file_only_with_force(here, capsys, monkeypatch):
    def boot(*a, **kw):
        raise AssertionError("measured before the output was checked")

    monkeypatch.setattr("perfsim.groundtruth.native.run_native", boot)
    write(here, "old.jsonl", "kept\n")
    assert_one_line(*cli(capsys, "groundtruth", "--native", "--out", "old.jsonl"),
                    "'old.jsonl' already exists", "--force")
    assert (here / "old.jsonl").read_text() == "kept\n"


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_groundtruth_timeout_is_a_finite_number_of_seconds(capsys, value):
    assert_one_line(*cli(capsys, "groundtruth", "--kernel", "6.12", "--timeout", value),
                    "--timeout", "seconds > 0")


@pytest.mark.parametrize("value", ["1e400", "nan", '"x"', "true"])
def test_a_cost_axis_value_is_a_finite_number(here, capsys, value):
    """``"cost.syscall_ns" = [1e400]`` was an OverflowError traceback."""
    write(here, "w.toml", 'name = "x"\n[base]\nworkload = "allocator_realloc"\n[grid]\n'
                          f'"cost.syscall_ns" = [{value}]\n')
    assert_one_line(*cli(capsys, "sweep", "w.toml", "--dry-run"), "cost parameter 'syscall_ns'",
                    "not a finite number of nanoseconds")
