"""Issue 10 item 7: every recorded ground-truth call, expressed as a ``perfsim plan`` request
file, gets the kernel's flush counts.

``tests/data/groundtruth/requests/<records>/*.toml`` are generated from
``tests/data/groundtruth/<records>.jsonl`` by ``perfsim groundtruth --requests`` (one file
per call: every VMA of the recorded mm, its population in the request vocabulary, the call,
the kernel profile and platform). Each is planned with ``perfsim plan --file F --json
--trace`` in-process and must give the whole-call flush calls and full flushes the kernel
made (and phase by phase where the trace marked the phases), and the same errno. A file
whose header says ``inexact`` (the recorded pages cannot be said in the vocabulary inside
the PMDs the call touches) is held to the kernel through the exact rebuild instead.
Regenerating the files from the records must give the same bytes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from perfsim.cli.main import main
from perfsim.groundtruth.compare import target_for
from perfsim.groundtruth.model import errno_name, measured, predicted
from perfsim.groundtruth.records import read_jsonl
from perfsim.groundtruth.requests import (
    fidelity_of,
    file_names,
    population_of,
    request_toml,
    safe_name,
)
from perfsim.host.model import PHASES

DATA = Path(__file__).parent / "data" / "groundtruth"
REQ = DATA / "requests"
SETS = sorted(d.name for d in REQ.iterdir() if d.is_dir())
FILES = sorted(REQ.glob("*/*.toml"))
EXAMPLE = Path(__file__).parent.parent / "examples" / "plan" / "ordinary-sparse.toml"
#: the planner's phase names for the trace's
PLANNER_PHASE = {"dst_unmap": "unmap_dst", "move": "move", "src_unmap": "unmap_src"}


def _record_of(path: Path) -> dict:
    m = re.search(r"^# Record: (\S+) line (\d+),", path.read_text(), re.M)
    assert m, f"{path}: no '# Record:' header"
    return read_jsonl(DATA / m[1])[int(m[2]) - 1]


def _plan(path: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["plan", "--file", str(path), "--json", "--trace", "--trace-limit", "0"]) == 0
    return json.loads(capsys.readouterr().out)


def planned_counts(doc: dict) -> dict:
    """Whole-call and per-phase flush calls / full flushes of a ``--json --trace`` document
    (the trace's groups, each step times its repeat)."""
    by = {ph: {"flush_calls": 0, "full_flushes": 0} for ph in PLANNER_PHASE.values()}
    total = {"flush_calls": 0, "full_flushes": 0}
    assert not doc["trace"]["truncated"]
    for g in doc["trace"]["groups"]:
        for st in g["steps"]:
            if st["flush"] is None:
                continue
            for d in (by.setdefault(st["phase"], {"flush_calls": 0, "full_flushes": 0}), total):
                d["flush_calls"] += g["repeat"]
                d["full_flushes"] += g["repeat"] * (st["flush"] == "full")
    return {"whole": total, **{t: by[p] for t, p in PLANNER_PHASE.items()}}


# ------------------------------------------------------------------- the shipped files
@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}:{p.stem}" for p in FILES])
def test_request_file_gets_the_kernels_flush_counts(path, capsys):
    rec = _record_of(path)
    want = measured(rec)
    scopes = ["whole"] + (list(PHASES) if rec.get("phases_known") else [])
    if fidelity_of(path.read_text()) == "inexact":
        got = predicted(rec, target_for(rec))  # the exact rebuild (the file cannot say it)
        errno = got["errno"]
    else:
        doc = _plan(path, capsys)
        got = planned_counts(doc)
        # the trace's steps add up to the JSON's whole-call counters
        assert got["whole"] == {"flush_calls": doc["syscall"]["tlb_flushes"],
                                "full_flushes": doc["syscall"]["tlb_full_flushes"]}
        errno = doc["errno"]
    for s in scopes:
        for k in ("flush_calls", "full_flushes"):
            assert got[s][k] == want[s][k], (s, k, got[s][k], want[s][k])
    assert errno == errno_name(int(rec.get("errno", 0)))


@pytest.mark.parametrize("name", SETS)
def test_regenerated_request_files_are_byte_identical(name, tmp_path, capsys):
    out = tmp_path / name
    assert main(["groundtruth", "--quiet", "--requests", str(out),
                 str(DATA / f"{name}.jsonl")]) == 0
    shipped = {p.name: p.read_bytes() for p in (REQ / name).glob("*.toml")}
    made = {p.name: p.read_bytes() for p in out.glob("*.toml")}
    assert sorted(made) == sorted(shipped)
    for fn in made:
        assert made[fn] == shipped[fn], fn
    assert not [p for p in out.iterdir() if p.suffix != ".toml"]  # no temp files left


def test_every_shipped_set_has_a_file_per_traced_record():
    for name in SETS:
        recs = [r for r in read_jsonl(DATA / f"{name}.jsonl") if r.get("traced")]
        assert len(list((REQ / name).glob("*.toml"))) == len(recs), name


def test_ordinary_requests_are_exact_in_every_pmd_the_call_touches():
    """No ordinary case needs the exact-rebuild fallback: where a file is not exact
    everywhere, what differs lies in PMDs the call does not touch (library pages)."""
    got = {p.stem: fidelity_of(p.read_text()) for p in (REQ / "host-6.18-ordinary").glob("*.toml")}
    assert set(got.values()) <= {"exact", "call-pmds"}, got


def test_every_file_header_names_its_record_and_the_measured_counts():
    for p in FILES:
        text = p.read_text()
        rec = _record_of(p)
        assert f"id {rec['id']!r}" in text
        w = measured(rec)["whole"]
        assert f"whole call {w['flush_calls']} flush calls, {w['full_flushes']} full flushes" \
            in text, p


# ------------------------------------------------------------------ population words
def _vma(start, npages, present, window=None):
    v = {"start": start, "end": start + npages * 4096, "perms": "rw-p", "path": "",
         "present": [[start + a * 4096, start + b * 4096] for a, b in present]}
    if window is not None:
        v["present_window"] = [start + window[0] * 4096, start + window[1] * 4096]
    return v


def test_every_kth_page_from_the_buffer_start_is_every_k():
    base = 0x7F0000201000  # +4K: not the address-multiple pattern
    v = _vma(base, 16384, [(i, i + 1) for i in range(0, 16384, 512)])
    assert (population_of(v).value, population_of(v).how) == ("every:512", "exact")


def test_a_written_prefix_is_first_size():
    v = _vma(0x7F0000201000, 16384, [(0, 256)])
    assert (population_of(v).value, population_of(v).how) == ("first:1M", "exact")


def test_a_fully_written_buffer_is_full():
    assert population_of(_vma(0x7F0000200000, 512, [(0, 512)])).value == "full"


def test_an_untouched_mapping_is_touched_false():
    c = population_of(_vma(0x7F0000200000, 1, []))
    assert (c.key, c.value, c.how) == ("touched", False, "exact")


def test_a_vma_outside_the_window_is_unrecorded_none():
    v = {"start": 0x400000, "end": 0x401000, "perms": "r--p", "path": "/probe"}
    c = population_of(v)
    assert (c.key, c.value, c.how) == ("populate", "none", "unrecorded")


def test_a_prefix_ending_at_the_window_is_preferred_to_pages_beyond_it():
    v = _vma(0x7F0000200000, 342, [(0, 68)], window=(0, 68))
    assert (population_of(v).value, population_of(v).how) == ("first:272K", "exact")


def test_a_page_set_no_loop_makes_is_the_closest_pattern_and_says_so():
    c = population_of(_vma(0x7F0000200000, 38, [(0, 1), (2, 38)]))
    assert (c.value, c.how) == ("full", "approx")
    assert "no loop pattern" in c.note and "1 more and 0 fewer" in c.note


def test_case_ids_become_safe_unique_file_names():
    assert safe_name("ordinary-4K-4K/64M/1t/thp-default") == "ordinary-4K-4K_64M_1t_thp-default"
    recs = [{"id": "a/b", "platform": "bare-metal"}, {"id": "a/b", "platform": "kvm-guest"},
            {"id": "c", "platform": "kvm-guest"}]
    assert file_names(recs) == ["a_b_bare-metal.toml", "a_b_kvm-guest.toml", "c.toml"]


def test_request_text_depends_only_on_the_record():
    rec = read_jsonl(DATA / "host-6.18-ordinary.jsonl")[0]
    a = request_toml(rec, records_name="host-6.18-ordinary.jsonl", line=1)
    assert a == request_toml(dict(rec), records_name="host-6.18-ordinary.jsonl", line=1)


# ------------------------------------------------------------------------- the example
def test_example_ordinary_sparse_move_flushes_32_times_all_full(capsys):
    """examples/plan/ordinary-sparse.toml: issue 10's case, from the recorded layout."""
    doc = _plan(EXAMPLE, capsys)
    assert (doc["syscall"]["tlb_flushes"], doc["syscall"]["tlb_full_flushes"]) == (32, 32)
    rec = _record_of(EXAMPLE)
    assert measured(rec)["whole"]["flush_calls"] == 32
    assert measured(rec)["whole"]["full_flushes"] == 32


def test_example_ordinary_sparse_is_its_generated_file_below_the_header():
    gen = REQ / "host-6.18-ordinary" / "ordinary-4K-4K_64M_1t_thp-default_every512_gs-untouched.toml"
    body = gen.read_text().split("\n", 2)[2]
    assert EXAMPLE.read_text().endswith("\n" + body)


# ------------------------------------------------------------------------ bad input
def test_requests_option_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    records = DATA / "host-6.18-ordinary.jsonl"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    not_json = tmp_path / "bad.jsonl"
    not_json.write_text("{nope\n")
    no_vmas = tmp_path / "novmas.jsonl"
    no_vmas.write_text(json.dumps({"id": "x", "traced": True}) + "\n")
    untraced = tmp_path / "untraced.jsonl"
    untraced.write_text(json.dumps({"id": "x", "traced": False}) + "\n")
    for argv in (["groundtruth", "--requests", str(tmp_path / "out")],
                 ["groundtruth", "--compare", str(records), str(records)],
                 ["groundtruth", "--requests", str(a_file), str(records)],
                 ["groundtruth", "--requests", str(tmp_path / "out"), str(tmp_path / "nope.jsonl")],
                 ["groundtruth", "--requests", str(tmp_path / "out"), str(not_json)],
                 ["groundtruth", "--requests", str(tmp_path / "out"), str(no_vmas)],
                 ["groundtruth", "--quiet", "--requests", str(tmp_path / "out"), str(untraced)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("perfsim: error:") and "\n" not in err, (argv, err)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_thp_the_kernel_did_not_map_is_written_thp_false():
    """memfd + MADV_HUGEPAGE at a PMD-aligned address, on a machine whose shmem THP is off:
    smaps shows no PMD mapped, so the request says thp = false (base pages, as recorded)."""
    rec = next(r for r in read_jsonl(DATA / "host-6.18-ordinary.jsonl")
               if r["id"] == "ordinary-0-0/64M/1t/memfd/thp-on")
    text = request_toml(rec, records_name="host-6.18-ordinary.jsonl", line=1)
    src = text[text.index("# the source"):].split("\n\n")[0]
    assert "thp = false" in src and "MADV_HUGEPAGE" in src
    assert fidelity_of(text) == "exact"
