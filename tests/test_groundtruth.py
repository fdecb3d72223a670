"""Every kernel profile held against a running kernel of that version (issue 11), and the
planner held against ordinary-program layouts on this machine's kernel (issue 10 item 7).

Recorded half (always runs, boots nothing): ``tests/data/groundtruth/<version>.jsonl`` hold
the probe's calls on Debian's kernels under QEMU TCG (bare metal to the kernel) and, for
6.18, on this machine (a KVM guest); ``host-6.18-ordinary.jsonl`` holds the ordinary-program
grid measured here. Every record is rebuilt as a perfsim address space and compared with
``plan_mremap`` under its kernel's profile and platform: whole-call and per-phase flush
calls and full flushes, and IPI rounds where they are determined. The calls listed in
``known_mismatches.toml`` are strict expected failures (a planner fix makes them pass, and
then this test fails until the entry is removed).

Live half: re-measures a few ordinary layouts natively (root and tracefs), and one kernel
under QEMU (marked slow; needs qemu-system-x86_64, busybox-static and a cached image).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from perfsim.errors import PerfsimError
from perfsim.groundtruth import grid as G
from perfsim.groundtruth.compare import compare_records, markdown_table, target_for
from perfsim.groundtruth.initramfs import write_cpio
from perfsim.groundtruth.mismatches import load_mismatches
from perfsim.groundtruth.model import compare, measured, predicted, space_for_record
from perfsim.groundtruth.records import kernel_version, parse_probe_output, read_jsonl
from perfsim.profiles import kernel_names, resolve_target

DATA = Path(__file__).parent / "data" / "groundtruth"
FILES = sorted(DATA.glob("*.jsonl"))
MISMATCHES = load_mismatches(DATA / "known_mismatches.toml")
MiB, GiB = 1 << 20, 1 << 30


def _records(name: str) -> list[dict]:
    return read_jsonl(DATA / name)


def _params():
    for f in FILES:
        for rec in read_jsonl(f):
            key = (f.name, rec["id"], rec["kernel"])
            marks = []
            if key in MISMATCHES:
                m = MISMATCHES[key]
                marks = [pytest.mark.xfail(strict=True, reason=f"{m['rule'][:120]}...")]
            yield pytest.param(f.name, rec, marks=marks,
                               id=f"{f.stem}:{rec['kernel']}:{rec['platform']}:{rec['id']}")


# ------------------------------------------------------------------- the recorded half
@pytest.mark.parametrize("name,rec", list(_params()))
def test_recorded_call_agrees_with_its_kernel_profile(name, rec):
    assert rec["traced"], rec.get("trace_skipped")
    c = compare(rec, target_for(rec))
    assert c["agree"], c["diff"]


def test_every_obtainable_kernel_line_has_recorded_ground_truth():
    """6.6-6.11 and 6.13-6.15 have no Debian image (``apt-cache search``, 2026-12-03;
    docs/kernels.md); every other profile has a record file."""
    have = {f.stem for f in FILES}
    for v in kernel_names():
        if v not in ("6.6", "6.7", "6.8", "6.9", "6.10", "6.11", "6.13", "6.14", "6.15"):
            assert v in have, f"no tests/data/groundtruth/{v}.jsonl"


VERSION_FILES = [f.stem for f in FILES
                 if not f.stem.startswith(("host-", "zap-", "truncate-", "random-", "kernel-picks-",
                                       "dontneed-"))]


@pytest.mark.parametrize("version", VERSION_FILES)
def test_each_version_covers_the_issue_grid(version):
    """E1-E5 at 64 MiB and 1 GiB, realignable, blocked, PMD-aligned, sparse, shmem."""
    recs = _records(f"{version}.jsonl")
    ids = {r["id"] for r in recs}
    for shape in ("pud_aligned", "pmd_aligned", "realignable", "blocked", "unaligned"):
        for size in ("64M", "1G"):
            assert f"{shape}/{size}/1t" in ids
    assert any(r["id"].startswith("small/") for r in recs)
    assert any(r["populate"].startswith("every:") for r in recs)
    assert any(r["backing"] in ("shmem", "memfd") for r in recs)
    assert all(kernel_version(r["kernel"]) == version for r in recs)


@pytest.mark.parametrize("version", VERSION_FILES)
def test_each_version_has_the_zap_grid_recorded(version):
    """zap-<version>.jsonl: the ``zap`` grid (written anon and shmem unmapped by a shrink
    or by MREMAP_FIXED, one and several PTE tables) on the same kernels."""
    recs = _records(f"zap-{version}.jsonl")
    want = {c["id"] for c in G.zap_cases()}
    for kernel in {r["kernel"] for r in _records(f"{version}.jsonl")}:
        assert {r["id"] for r in recs if r["kernel"] == kernel} == want, kernel
    assert all(kernel_version(r["kernel"]) == version for r in recs)


def test_a_zap_of_dirty_shmem_flushes_per_pte_table_on_every_recorded_kernel():
    """The recorded fact the planner's zap_forces_flush rule comes from: shrinking 8 MiB
    of written memory to 2 MiB unmaps three PTE tables' worth; shmem flushes once per table
    (3, full) plus once for the freed tables, anon once."""
    for f in DATA.glob("zap-*.jsonl"):
        by = {(r["id"], r["kernel"]): measured(r)["dst_unmap"] for r in read_jsonl(f)}
        for (case, kernel), m in by.items():
            if case == "pmd_aligned/8M/1t/shmem/to-2M":
                assert (m["flush_calls"], m["full_flushes"]) == (4, 3), (f.name, kernel)
            if case == "pmd_aligned/8M/1t/to-2M":
                assert (m["flush_calls"], m["full_flushes"]) == (1, 1), (f.name, kernel)


def test_known_mismatches_name_recorded_calls_and_say_what_they_are():
    """Each entry names a recorded call and its measured/predicted whole-call counts are
    what the data and today's planner give."""
    recs = {(f.name, r["id"], r["kernel"]): r for f in FILES for r in read_jsonl(f)}
    for key, m in MISMATCHES.items():
        assert key in recs, key
        rec = recs[key]
        me = measured(rec)["whole"]
        pr = predicted(rec, target_for(rec))["whole"]
        assert [me["flush_calls"], me["full_flushes"]] == m["measured"], key
        assert [pr["flush_calls"], pr["full_flushes"]] == m["predicted"], key
        assert rec["platform"] == m["platform"]


def test_bare_metal_before_6_14_frees_tables_without_a_batch_flush():
    """E4 at 1 GiB frees 515 page tables in the source unmap. Through the RCU table batch
    (509 per batch) that is two flushes; freed as pages (bare metal, 6.13 and older) one."""
    def src_unmap(version, platform):
        for r in _records(f"{version}.jsonl"):
            if r["id"] == "unaligned/1G/1t" and r["platform"] == platform:
                return measured(r)["src_unmap"]["flush_calls"]
        raise AssertionError(f"{version} {platform}: no unaligned/1G/1t")

    assert src_unmap("6.1", "bare-metal") == 1
    assert src_unmap("6.12", "bare-metal") == 1
    for v in ("6.16", "6.17", "6.18", "6.19", "7.3"):
        assert src_unmap(v, "bare-metal") == 2, v
    assert src_unmap("6.18", "kvm-guest") == 2


def test_profiles_say_which_kernels_free_tables_as_pages_on_bare_metal():
    for v in kernel_names():
        t = resolve_target(v)
        bare = t.with_changes(platform="bare-metal").kernel
        assert t.kernel.tables_freed_through_batch  # kvm-guest, the default
        assert bare.tables_freed_through_batch == (t.kernel.version >= (6, 14)), v


def test_platform_setting_rejects_other_values():
    with pytest.raises(PerfsimError, match="platform"):
        resolve_target("6.18").with_changes(platform="xen")


# --------------------------------------------------------- issue 10 item 7: ordinary layouts
def test_ordinary_grid_covers_what_a_program_does():
    recs = _records("host-6.18-ordinary.jsonl")
    assert {r["layout"] for r in recs} == {"ordinary"}
    assert {r["threads"] for r in recs} == {1, 2}
    assert {r["backing"] for r in recs} >= {"anon", "memfd", "shmem"}
    assert {r["thp"] for r in recs} >= {"on", "off", "default"}
    pops = {r["populate"].split(":")[0] for r in recs}
    assert pops >= {"full", "every", "first"}
    assert {r["guard_src"] for r in recs} >= {"no", "touched", "untouched"}
    # the buffers sit in the mmap area, next to the C library's mappings
    for r in recs:
        libs = [v for v in r["vmas"] if "libc" in v["path"]]
        assert libs and abs(libs[0]["start"] - r["src"]) < (1 << 32), r["id"]


@pytest.mark.parametrize("guard", ["touched", "untouched"])
def test_sparse_every_512th_page_move_with_a_page_below_flushes_32_times_all_full(guard):
    """Issue 10: a +4K/+4K 64 MiB move of a buffer whose every 512th page (from its start)
    was written, with a one-page VMA below it: 32 flushes, all full, on this kernel."""
    rec = next(r for r in _records("host-6.18-ordinary.jsonl")
               if r["id"] == f"ordinary-4K-4K/64M/1t/thp-default/every512/gs-{guard}")
    assert measured(rec)["whole"]["flush_calls"] == 32
    assert measured(rec)["whole"]["full_flushes"] == 32
    p = predicted(rec, target_for(rec))["whole"]
    assert (p["flush_calls"], p["full_flushes"]) == (32, 32)


def test_rebuilt_space_holds_every_recorded_vma_and_the_present_pages():
    rec = next(r for r in _records("host-6.18-ordinary.jsonl")
               if r["id"] == "ordinary-4K-4K/64M/1t/thp-default/every512/gs-touched")
    space, req = space_for_record(rec, resolve_target("6.18"))
    user = [v for v in rec["vmas"] if v["end"] <= space.arch.user_va_top]
    assert len(space.vmas) == len(user)
    assert space.find_vma(rec["src"]).name == "src"
    src = next(v for v in rec["vmas"] if v["start"] == rec["src"])
    pages = sum((b - a) // 4096 for a, b in src["present"])
    assert space.pt.present_ptes(rec["src"], rec["src"] + rec["size"]) == pages == 32
    assert (req.old_addr, req.new_addr) == (rec["src"], rec["dst"])


# ------------------------------------------------------------------ probe output and grid
def test_probe_output_is_counted_with_the_host_trace_parser():
    text = (DATA / "probe-output-sample.txt").read_text()
    hdr, recs = parse_probe_output(text.splitlines(), platform="kvm-guest", source="native")
    assert hdr["machine"] == "x86_64"
    assert [r["id"] for r in recs] == ["small/132K/1t", "blocked/4M/2t"]
    assert all(r["traced"] and r["phases_known"] for r in recs)
    t = resolve_target("6.18")
    for r in recs:
        assert compare(r, t)["agree"], r["id"]


def test_probe_output_cut_short_is_one_clear_error():
    text = (DATA / "probe-output-sample.txt").read_text().splitlines()
    with pytest.raises(PerfsimError, match="without the grid's end marker"):
        parse_probe_output(text[:-1], platform="bare-metal", source="qemu-tcg")
    with pytest.raises(PerfsimError, match="no grid header"):
        parse_probe_output(["booting...", "panic"], platform="bare-metal", source="qemu-tcg")


def test_grid_cases_are_checked_field_by_field():
    with pytest.raises(PerfsimError, match="'populate'"):
        G.shape_case("unaligned", 64 * MiB, populate="every:x")
    with pytest.raises(PerfsimError, match="'backing'"):
        G.shape_case("unaligned", 64 * MiB, backing="hugetlb")
    with pytest.raises(PerfsimError, match="--grid"):
        G.named_grid("nope")
    line = G.probe_line(G.shape_case("blocked", 64 * MiB))
    assert "guard_src=touched" in line and "src_off=2101248" in line


def test_window_offsets_are_perfsim_host_layouts():
    from perfsim.host.layout import _offsets

    for shape, offs in G.SHAPE_OFFSETS.items():
        assert _offsets(shape, 64 * 1024) == offs


def test_initramfs_archive_is_newc_with_a_trailer():
    blob = write_cpio([("init", 0o100755, b"#!/bin/sh\n"), ("bin/sh", 0o120777, b"busybox")])
    assert blob.startswith(b"070701") and b"TRAILER!!!" in blob
    assert len(blob) % 4 == 0


def test_docs_table_marks_the_disagreements(tmp_path):
    table = markdown_table([DATA / "6.1.jsonl", DATA / "6.18.jsonl"])
    row = next(ln for ln in table.splitlines() if ln.startswith("| unaligned/1G/1t |"))
    assert "1026 / 513 (1026 / 513) |" in row and "≠" not in row
    # a record that no longer matches its kernel's rules is marked
    bad = tmp_path / "6.1.jsonl"
    bad.write_text("".join(_altered(DATA / "6.1.jsonl", "unaligned/1G/1t")))
    row = next(ln for ln in markdown_table([bad]).splitlines()
               if ln.startswith("| unaligned/1G/1t |"))
    assert "≠" in row


def _altered(path, case_id):
    """The lines of ``path`` with case ``case_id`` claimed for kernel 6.16 (whose rules
    differ for that call on bare metal), so that the planner disagrees with it."""
    import json

    for line in path.read_text().splitlines(keepends=True):
        rec = json.loads(line)
        if rec.get("id") == case_id:
            rec["kernel_version"] = "6.16"
            line = json.dumps(rec) + "\n"
        yield line


# ------------------------------------------------------------------------- the live half
def _native_reason() -> str | None:
    if os.uname().machine != "x86_64":
        return "the probe measures x86-64 kernels"
    if os.geteuid() != 0:
        return "needs root to use tracefs"
    if not shutil.which("gcc"):
        return "needs gcc to build the probe"
    from perfsim.host.trace import tracing_status

    usable, why = tracing_status()
    return None if usable else why


@pytest.mark.host
def test_live_ordinary_layouts_agree_with_the_planner():
    reason = _native_reason()
    if reason:
        pytest.skip(reason)
    from perfsim.groundtruth.native import run_native

    K4 = 4096
    cases = [G.ordinary_case(64 * MiB, K4, K4, populate="every:512", guard_src="touched"),
             G.ordinary_case(64 * MiB, K4, 2 * K4, populate="first:1048576"),
             G.ordinary_case(64 * MiB, 0, 0, thp="on", threads=2),
             G.ordinary_case(64 * MiB, K4, K4, backing="memfd", dst_mode="reserved")]
    _hdr, recs = run_native(cases, link="dynamic")
    rows = compare_records(recs, "6.18" if kernel_version(recs[0]["kernel"]) not in kernel_names()
                           else None)
    assert [r["status"] for r in rows] == ["agree"] * 4, rows


def _qemu_reason() -> str | None:
    if not shutil.which("qemu-system-x86_64"):
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    from perfsim.groundtruth.debian import cached_images
    from perfsim.groundtruth.initramfs import have_busybox

    if not have_busybox():
        return "no static busybox (apt-get install busybox-static)"
    if not shutil.which("gcc"):
        return "needs gcc to build the probe"
    if not any(r.startswith("6.12.") for r in cached_images()):
        return "no cached 6.12 image (perfsim groundtruth --kernel 6.12 --fetch)"
    return None


@pytest.mark.slow
def test_qemu_remeasures_6_12_as_recorded():
    reason = _qemu_reason()
    if reason:
        pytest.skip(reason)
    from perfsim.groundtruth.debian import cached_images, pick_release
    from perfsim.groundtruth.qemu import run_qemu

    have = cached_images()
    image = have[pick_release({r: ("", "") for r in have}, "6.12")]
    ids = ["unaligned/64M/1t", "blocked/64M/2t", "unaligned/1G/1t"]
    cases = [c for c in G.shapes_grid() if c["id"] in ids]
    _hdr, recs = run_qemu(image, cases, timeout_s=900)
    recorded = {r["id"]: r for r in _records("6.12.jsonl")}
    for rec in recs:
        old = recorded[rec["id"]]
        if rec["kernel"] == old["kernel"]:
            for k in ("flush_calls", "full_flushes"):
                assert measured(rec)["whole"][k] == measured(old)["whole"][k], rec["id"]
        c = compare(rec, target_for(rec))
        if ("6.12.jsonl", rec["id"], old["kernel"]) in MISMATCHES:
            assert not c["agree"]
        else:
            assert c["agree"], (rec["id"], c["diff"])


# ------------------------------------------------------------------------------ the command
def test_cli_compare_exits_1_on_a_disagreement_and_0_otherwise(capsys, tmp_path):
    from perfsim.cli.main import main

    assert main(["groundtruth", "--compare", str(DATA / "6.1.jsonl")]) == 0
    assert "compared calls agree" in capsys.readouterr().out
    bad = tmp_path / "6.1.jsonl"
    bad.write_text("".join(_altered(DATA / "6.1.jsonl", "unaligned/1G/1t")))
    assert main(["groundtruth", "--compare", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "DIFF" in out and "unaligned/1G/1t" in out


def test_cli_bad_requests_are_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    from perfsim.cli.main import main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    header_first = tmp_path / "with-header.jsonl"   # a run_native header saved as a record
    header_first.write_text('{"release": "6.18.44", "ncpus": 2}\n'
                            + (DATA / "6.1.jsonl").read_text())
    for argv in (["groundtruth", "--kernel", "5.10"],
                 ["groundtruth", "--compare", str(header_first)],
                 ["groundtruth", "--kernel", "6.12", "--grid", "ordinary"],
                 ["groundtruth", "--kernel", "6.12", "--profile", "9.9"],
                 ["groundtruth", "--compare", str(tmp_path / "missing.jsonl")],
                 ["groundtruth"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("perfsim: error:") and "\n" not in err, (argv, err)


def test_an_image_whose_config_lacks_tracepoints_is_refused_before_booting(tmp_path):
    from perfsim.groundtruth.qemu import check_config

    image = tmp_path / "vmlinuz-6.9.0-test"
    image.write_bytes(b"\0")
    (tmp_path / "config-6.9.0-test").write_text("CONFIG_FTRACE_SYSCALLS=y\n# CONFIG_TRACEPOINTS is not set\n")
    with pytest.raises(PerfsimError, match="CONFIG_TRACEPOINTS=y"):
        check_config(image)
    (tmp_path / "config-6.9.0-test").write_text("CONFIG_TRACEPOINTS=y\nCONFIG_FTRACE_SYSCALLS=y\n")
    check_config(image)


# 6.1 under TCG, MREMAP_FIXED over a mapping at exactly the destination (abridged: the
# pointers and addresses of a recorded call, one flush per phase)
_TRACE_6_1_DETACH = """\
           probe-91      [000] .....     5.382007: sys_enter: NR 25 (300000200000, 400000, 400000, 3, 300080600000, 0)
           probe-91      [000] .....     5.382071: ma_write: mas_store_gfp\tNode 00000000752082aa (0 18446744073709551615) range:52778711908352-52778716102655 piv (0) val 0000000000eab61d
           probe-91      [000] .....     5.382089: ma_write: mas_store_prealloc\tNode 00000000752082aa (797085696 18446744073709551615) range:52778711908352-52778716102655 piv (0) val 0000000000000000
           probe-91      [000] d..2.     5.382542: tlb_flush: pages:-1 reason:local mm shootdown (3)
           probe-91      [000] .....     5.383070: ma_write: mas_store_prealloc\tNode 00000000752082aa (0 18446744073709551615) range:52778711908352-52778716102655 piv (0) val 0000000000eab61d
           probe-91      [000] d..3.     5.383138: tlb_flush: pages:-1 reason:local mm shootdown (3)
           probe-91      [000] .....     5.383197: ma_write: mas_store_prealloc\tNode 00000000752082aa (797085696 18446744073709551615) range:52776560230400-52776564424703 piv (0) val 0000000000000000
           probe-91      [000] d..1.     5.383227: tlb_flush: pages:0 reason:local mm shootdown (3)
           probe-91      [000] .....     5.383247: sys_exit: NR 25 = 52778711908352
"""


def test_6_1_detached_tree_store_of_the_destination_is_not_taken_for_the_new_vma():
    """6.1's do_mas_align_munmap stores the unmapped VMA in its detached tree first (a
    non-NULL ma_write of the destination's range, then NULL in the mm's tree); the move
    starts at copy_vma's insert after it, so the destination's unmap flush is dst_unmap."""
    from perfsim.groundtruth.records import without_detach_tree_stores
    from perfsim.host.trace import extract_call, parse_trace

    raw = parse_trace(_TRACE_6_1_DETACH)
    dst, n = 0x300080600000, 0x400000
    kept = without_detach_tree_stores(raw, 91, dst, n)
    assert len(kept) == len(raw) - 1
    by = extract_call(kept, 91).summary_by_phase()
    assert [by[p]["flush_calls"] for p in ("dst_unmap", "move", "src_unmap")] == [1, 1, 1]
    # the phases alone take the last store of the range before the source's removal as the
    # insert, so they come out the same without the filter (6.1's split destinations too)
    assert extract_call(raw, 91).summary_by_phase() == by
    assert without_detach_tree_stores(raw, 91, dst + 4096, n) == raw  # another range


def test_a_private_file_mapping_is_rebuilt_map_private():
    """/proc/self/maps ``p``: a written page of it is anonymous, so zapping it forces no
    flush; ``s``: shared."""
    from perfsim.groundtruth.model import vma_of

    rec = {"src": 0}
    lib = vma_of({"start": 1 << 30, "end": (1 << 30) + 8192, "perms": "rw-p", "offset": 0,
                  "path": "/usr/lib/libc.so.6"}, rec, 12)
    shm = vma_of({"start": 1 << 30, "end": (1 << 30) + 8192, "perms": "rw-s", "offset": 0,
                  "path": "/dev/zero (deleted)"}, rec, 12)
    assert (lib.backing, lib.shared) == ("file", False)
    assert (shm.backing, shm.shared) == ("shmem", True)


def test_the_zap_rule_holds_in_an_ordinary_programs_layout_too():
    """host-6.18-ordinary-zap.jsonl: the same unmaps by a C program whose buffers come from
    mmap(NULL) next to its C library (recorded natively here, 3 repetitions each): written
    shmem/memfd shrunk from 8 MiB to 2 MiB flushes once per PTE table, anon once, and the
    planner predicts every call, phase by phase."""
    recs = _records("host-6.18-ordinary-zap.jsonl")
    assert {r["layout"] for r in recs} == {"ordinary"} and len(recs) == 24
    for r in recs:
        m = measured(r)["dst_unmap"]
        if r["id"].startswith("ordinary-0-0/8M/1t/") and r["id"].endswith("/to-2M"):
            want = (1, 1) if r["backing"] == "anon" else (4, 3)
            assert (m["flush_calls"], m["full_flushes"]) == want, r["id"]
    assert {row["status"] for row in compare_records(recs)} == {"agree"}
