"""Real programs' kernel-chosen destinations (docs/real-programs.md, *Where the kernel put
the moved blocks*): every mremap of the shipped strace logs that the kernel moved to an
address it chose (glibc ``realloc``, CPython's ``mmap.resize``, SQLite's mapping of its
database file) is planned again without the address, on the replay's space plus what exec
left at the top of the mmap area (``tests/data/realprog/exec-maps.txt``), and must land
where the kernel put it (docs/kernel-rules.md R26)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfsim.host.program import exec_layout, placement_rows, replay_inputs
from perfsim.planner.unmapped_area import x86_mmap_base
from perfsim.profiles import resolve_target

DATA = Path(__file__).parent / "data" / "realprog"
LOGS = sorted(p for p in [*DATA.glob("*.strace"), *(DATA / "xeon").glob("*.strace")]
              if p.stem != "sh_two_programs")
TARGET = resolve_target("6.18", "x86_64")
#: the recordings ran without randomisation with the default 8 MiB stack rlimit
MMAP_BASE = x86_mmap_base(TARGET.arch.user_va_top, 8 << 20)
#: two threads whose calls overlap in time: the log's order is not the kernel's, so a
#: destination chosen while the other thread's mapping came or went may differ
#: (docs/real-programs.md, "In which order two threads' overlapping calls took mmap_lock")
RACED = {("c_realloc_2t.strace", "0x7ffff6af2000", 2990080, 4481024)}


def _rows(path: Path) -> list[dict]:
    rows, entries = replay_inputs(path.read_text(), str(path))
    threads = 2 if path.stem.endswith(("_2t", "_threads")) else 1
    exec_vmas = exec_layout((DATA / "exec-maps.txt").read_text(), TARGET.arch)
    return placement_rows(rows, entries, TARGET, threads, exec_vmas, MMAP_BASE)


def test_the_exec_layout_ends_at_mmap_base():
    vmas = exec_layout((DATA / "exec-maps.txt").read_text(), TARGET.arch)
    below_stack = [v for v in vmas if v.name != "[stack]"]
    assert max(v.end for v in below_stack) == MMAP_BASE == 0x7FFFF7FFF000
    assert {v.name for v in vmas} >= {"[vvar]", "[vdso]", "[stack]"}


@pytest.mark.parametrize("path", LOGS, ids=lambda p: str(p.relative_to(DATA)))
def test_kernel_chosen_destinations_land_where_the_kernel_put_them(path):
    rows = _rows(path)
    wrong = [r for r in rows if not r["agree"]
             and (path.name, r["addr"], r["old_len"], r["new_len"]) not in RACED]
    assert not wrong, wrong


def test_the_logs_hold_about_a_hundred_such_moves_and_one_race():
    rows = {p: _rows(p) for p in LOGS}
    assert sum(len(r) for r in rows.values()) >= 100
    missed = {(p.name, r["addr"], r["old_len"], r["new_len"])
              for p, rs in rows.items() for r in rs if not r["agree"]}
    assert missed == RACED


PLACEMENT = DATA / "placement"


@pytest.mark.parametrize("name", ["py_bytes3m", "c_realloc_pmd"])
def test_programs_recorded_after_the_rule_land_where_the_kernel_put_them(name):
    """Held out: two programs recorded after R26 was written, each with its own exec map."""
    log = PLACEMENT / f"{name}.strace"
    rows_in, entries = replay_inputs(log.read_text(), str(log))
    exec_vmas = exec_layout((PLACEMENT / f"{name}.exec-maps").read_text(), TARGET.arch)
    rows = placement_rows(rows_in, entries, TARGET, 1, exec_vmas, MMAP_BASE)
    assert len(rows) >= 3 and all(r["agree"] for r in rows), rows


def test_whole_pmd_growths_start_on_a_pmd_boundary_and_their_flushes_agree():
    import json

    from perfsim.host.program import compare_program

    log = PLACEMENT / "c_realloc_pmd.strace"
    rows_in, entries = replay_inputs(log.read_text(), str(log))
    moved = [r for r in rows_in if r["op"] == "mremap" and r["result"] != r["addr"]]
    assert moved and all(int(r["result"], 16) % (2 << 20) == 0 for r in moved)
    records = [json.loads(x) for x in (PLACEMENT / "c_realloc_pmd.kernel.jsonl").open()]
    rows = compare_program(rows_in, entries, records, TARGET, 1)
    assert len(rows) == 11 and all(r["agree"] for r in rows)
