"""Workloads: schema and its errors, shipped scenarios, seeded generation, trace replay."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import numpy as np
import pytest

from perfsim.errors import PerfsimError
from perfsim.planner import plan_mremap
from perfsim.profiles import resolve_target
from perfsim.workload import (
    WORKLOAD_DIR,
    convert_strace,
    load_workload,
    parse_trace_csv,
    parse_workload,
    resolve_workload,
    run_workload,
    synthetic_requests,
    workload_names,
)

DATA = Path(__file__).parent / "data"
TARGET = resolve_target("6.18", "x86_64")

BASE = """
name = "t"
cpus = 2
[[processes]]
name = "app"
threads = 2
[[streams]]
name = "s"
process = "app"
count = 4
size = { dist = "loguniform", min = "64K", max = "8M", align = "4K" }
"""


def err(text: str) -> str:
    with pytest.raises(PerfsimError) as e:
        parse_workload(text, "w.toml")
    return str(e.value)


# --------------------------------------------------------------------------- shipped
def test_shipped_scenarios_cover_the_issue():
    names = set(workload_names())
    assert {"allocator_realloc", "gc_compaction", "exec_stack", "db_buffer_pool", "ipi_storm",
            "shared_file_reclaim", "random_layout_stress"} <= names


@pytest.mark.parametrize("name", workload_names())
def test_shipped_scenario_validates_and_is_documented(name):
    path = WORKLOAD_DIR / f"{name}.toml"
    w = load_workload(path)
    assert w.description
    assert path.read_text().startswith("#"), "each scenario opens with a comment explaining it"


@pytest.mark.parametrize("name", ["gc_compaction", "exec_stack", "shared_file_reclaim",
                                  "allocator_realloc", "random_layout_stress", "ipi_storm",
                                  "db_buffer_pool", "trace_replay"])
def test_shipped_scenario_runs_small(name):
    w = load_workload(WORKLOAD_DIR / f"{name}.toml")
    data = w.model_dump(mode="json")
    for s in data["streams"]:
        if s["kind"] == "synthetic":
            s["count"] = 2
            if name == "db_buffer_pool":
                s["size"] = {"dist": "fixed", "value": 64 << 20}
    res, m, _ = run_workload(parse_workload(data, name))
    assert m["calls"] >= 1 and m["lat_mean_ns"] > 0


# --------------------------------------------------------------------------- errors
def test_unknown_key_names_file_field_and_allowed_keys():
    e = err(BASE.replace("count = 4", "count = 4\nsizes = 3"))
    assert e.startswith("w.toml: streams[0].sizes: unknown key 'sizes'")
    assert "allowed keys:" in e and "size," in e


def test_wrong_type_names_field():
    e = err(BASE.replace("count = 4", 'count = "many"'))
    assert "w.toml: streams[0].count" in e and "an integer" in e


def test_bad_category_lists_allowed_values():
    e = err(BASE.replace("count = 4", 'count = 4\nsrc_align = "huge"'))
    assert "streams[0].src_align" in e and "allowed: pud, pmd, page, random" in e


def test_bad_distribution_kind():
    e = err(BASE.replace('dist = "loguniform"', 'dist = "zipf"'))
    assert "streams[0].size" in e and "loguniform" in e


def test_overlapping_vmas_rejected():
    e = err(BASE.replace("threads = 2", 'threads = 2\nvmas = [{name = "a", start = "0x10000000", '
                         'size = "4M"}, {name = "b", start = "0x10200000", size = "4M"}]'))
    assert "processes[0].vmas[1]" in e and "overlaps VMA 'a'" in e and "allowed:" in e


def test_request_outside_its_vma_rejected():
    text = """
name = "t"
[[processes]]
name = "app"
vmas = [{ name = "heap", start = "0x7f0000000000", size = "2M" }]
[[streams]]
kind = "calls"
name = "c"
process = "app"
calls = [{ vma = "heap", offset = "1M", old_len = "2M", new_addr = "0x7f4000000000", fixed = true }]
"""
    e = err(text)
    assert "streams[0].calls[0]" in e and "outside VMA 'heap'" in e and "offset + old_len" in e


def test_unknown_process_and_cpu():
    assert "streams[0].process: no process named 'x'; allowed: app" in err(
        BASE.replace('process = "app"', 'process = "x"'))
    assert "processes[0].cpus: CPU 5 does not exist" in err(
        BASE.replace("threads = 2", "threads = 2\ncpus = [0, 5]"))


def test_workload_file_error_names_the_path(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("bogus = 1\n" + BASE)
    with pytest.raises(PerfsimError, match=r"bad\.toml: bogus: unknown key"):
        load_workload(p)


# --------------------------------------------------------------------------- generation
def stream_of(extra: str):
    """The test stream with TOML ``extra`` keys replacing its own."""
    data = tomllib.loads(BASE)
    data["streams"][0].update(tomllib.loads(extra))
    return parse_workload(data).streams[0]


def test_same_seed_same_requests():
    s = stream_of("")
    a = synthetic_requests(s, np.random.SeedSequence(5), 0, TARGET, 2, 20)
    b = synthetic_requests(s, np.random.SeedSequence(5), 0, TARGET, 2, 20)
    assert [r for _, r in a] == [r for _, r in b]
    c = synthetic_requests(s, np.random.SeedSequence(6), 0, TARGET, 2, 20)
    assert [r for _, r in a] != [r for _, r in c]


def test_common_random_numbers_across_placement_arms():
    """Changing only the destination class leaves sizes and sources unchanged."""
    a = synthetic_requests(stream_of('dst_align = "same"'), np.random.SeedSequence(1), 0,
                           TARGET, 2, 30)
    b = synthetic_requests(stream_of('dst_align = "page"'), np.random.SeedSequence(1), 0,
                           TARGET, 2, 30)
    assert [r.old_len for _, r in a] == [r.old_len for _, r in b]
    assert [r.old_addr for _, r in a] == [r.old_addr for _, r in b]
    assert [r.new_addr for _, r in a] != [r.new_addr for _, r in b]


def test_alignment_classes():
    pmd, pud = 2 << 20, 1 << 30
    for _, r in synthetic_requests(stream_of('src_align = "pmd"'), np.random.SeedSequence(2), 0,
                                   TARGET, 1, 30):
        assert r.old_addr % pmd == 0 and r.old_addr % pud != 0
        assert (r.new_addr - r.old_addr) % pud == 0  # "same": mutually aligned
    for _, r in synthetic_requests(stream_of('src_align = "page"\ndst_align = "page"'),
                                   np.random.SeedSequence(2), 0, TARGET, 1, 30):
        assert r.old_addr % pmd != 0 and r.new_addr % pmd != 0


def test_guard_below_source_refuses_realignment():
    """E2 vs E3: a mutually aligned, PMD-unaligned move realigns unless a VMA sits below."""
    for guard, expect in ((0.0, True), (1.0, False)):
        s = stream_of(f'src_align = "page"\nsize = "8M"\nguard_below_src = {guard}')
        for space, req in synthetic_requests(s, np.random.SeedSequence(3), 0, TARGET, 1, 5):
            assert plan_mremap(space, req, TARGET).realigned is expect


def test_stack_op_plans_relocate_vma_down():
    s = stream_of('op = "stack"\nsize = "132K"\nshift = "2M"')
    for space, req in synthetic_requests(s, np.random.SeedSequence(0), 0, TARGET, 1, 3):
        assert req.for_stack and req.new_addr == req.old_addr - (2 << 20)
        assert plan_mremap(space, req, TARGET).errno is None


def test_run_is_deterministic():
    w = parse_workload(BASE)
    _, m1, _ = run_workload(w, seed=3)
    _, m2, _ = run_workload(w, seed=3)
    assert m1 == m2


# --------------------------------------------------------------------------- traces
def test_strace_conversion():
    out = io.StringIO()
    st = convert_strace((DATA / "realloc.strace").read_text(), out, "realloc.strace")
    assert (st.calls, st.failed) == (9, 1)
    entries = parse_trace_csv(out.getvalue())
    ops = [e.op for e in entries]
    assert ops.count("mremap") == 5 and ops.count("mmap") == 3 and ops.count("munmap") == 1
    times = [e.at_ns for e in entries]
    assert times == sorted(times) and times[0] == 0
    # the unfinished/resumed call is one entry, at its start time, with its recorded result
    grown = [e for e in entries if e.op == "mremap" and e.old_len == 2101248][0]
    assert grown.at_ns == 200_000 and grown.new_addr == 0x7F3A3E000000 and grown.fixed
    shared = [e for e in entries if e.op == "mmap"][1]
    assert shared.backing == "shmem"


def test_trace_csv_errors_name_line_and_column():
    with pytest.raises(PerfsimError, match=r"t.csv:3: column 'op'"):
        parse_trace_csv("op,addr,old_len\nmmap,0x1000,4096\nmsync,0x1000,4096\n", "t.csv")
    with pytest.raises(PerfsimError, match=r"unknown \['colour'\]"):
        parse_trace_csv("op,addr,old_len,colour\n", "t.csv")


def test_trace_replay_follows_the_recorded_addresses():
    _, m, _ = run_workload(WORKLOAD_DIR / "trace_replay.toml")
    assert m["calls"] == 5 and m["errors"] == 0


def test_negative_seed_is_a_one_line_error():
    with pytest.raises(PerfsimError, match=r"seed -1: must be an integer >= 0"):
        run_workload("gc_compaction", seed=-1)


def test_progress_is_reported_when_asked_and_silent_otherwise(capsys):
    w = load_workload(resolve_workload("exec_stack"))
    small = w.model_copy(update={"streams": [w.streams[0].model_copy(update={"count": 20})]})
    run_workload(small)
    assert capsys.readouterr().err == ""
    _, m, _ = run_workload(small, progress=True)
    err = capsys.readouterr().err.strip().splitlines()
    # stderr is not a terminal here: whole lines, the last one complete
    assert err and err[-1].startswith("exec_stack: 20/20 calls (100%)")
    assert m["calls"] == 20
