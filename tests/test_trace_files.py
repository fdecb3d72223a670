"""Traces of programs that map files: the converter's prot, flags, file and offset columns,
its truncate rows (``ftruncate`` under ``strace -y``), and what a truncation does to the
page tables of the file's mappings (perfsim.planner.truncate, ``truncate_pagecache`` →
``unmap_mapping_range``)."""

from __future__ import annotations

import io

import pytest

from perfsim.errors import PerfsimError
from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner.truncate import truncate_pagecache
from perfsim.profiles import resolve_target
from perfsim.workload.generate import Entry, StatefulPlanner
from perfsim.workload.trace import convert_strace, parse_trace_csv, strace_to_entries

T = resolve_target("6.18", "x86_64")
MiB = 1 << 20
PS = 4096

T0 = "100 10:00:00.0000"
LOG = "".join(f"{T0}{k}0 {call} <0.000005>\n" for k, call in enumerate([
    "mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS, -1, 0) = 0x7f0000000000",
    "ftruncate(3</tmp/a, b.dat>, 8388608) = 0",
    "mmap(NULL, 8388608, PROT_READ|PROT_WRITE, MAP_SHARED, 3</tmp/a, b.dat>, 0) = 0x7f0000400000",
    "mmap(NULL, 4194304, PROT_READ, MAP_PRIVATE|MAP_DENYWRITE, 4</usr/lib/libx.so>, 0x200000)"
    " = 0x7f0001000000",
    "mmap(NULL, 2097152, PROT_READ|PROT_WRITE, MAP_SHARED, 5</dev/shm/seg>, 0) = 0x7f0002000000",
    "ftruncate(6</tmp/a, b.dat>, 4194304) = 0",
    "ftruncate(7, 4096) = 0",
    "ftruncate(3</tmp/a, b.dat>, 1) = -1 EPERM (Operation not permitted)",
    "mremap(0x7f0000400000, 8388608, 4194304, 0) = 0x7f0000400000",
], start=1))


def _csv(text: str) -> list[str]:
    buf = io.StringIO()
    convert_strace(text, buf, "t.strace")
    return buf.getvalue().splitlines()


def test_the_converter_writes_prot_flags_file_and_offset_of_each_mmap():
    lines = _csv(LOG)
    assert lines[0].endswith(",prot,file,offset")
    es = strace_to_entries(LOG, "t.strace")
    anon, shared, lib, shm = [e for e in es if e.op == "mmap"]
    assert (anon.backing, anon.file, anon.prot) == ("anon", None, "rw")
    assert (shared.backing, shared.shared, shared.prot, shared.file, shared.offset) == \
        ("file", True, "rw", "/tmp/a, b.dat", 0)  # (a path with a comma in it)
    assert (lib.backing, lib.shared, lib.prot, lib.file, lib.offset) == \
        ("file", False, "r", "/usr/lib/libx.so", 0x200000)
    assert (shm.backing, shm.file) == ("shmem", "/dev/shm/seg")  # a file on tmpfs


def test_ftruncate_rows_name_the_file_by_its_path_whatever_the_fd():
    """The second truncate uses another fd (a dup, as CPython's mmap objects keep) of the
    same path; a truncate without -y's path, and a failed one, are dropped."""
    st = convert_strace(LOG, io.StringIO(), "t.strace")
    es = strace_to_entries(LOG, "t.strace")
    cuts = [(e.file, e.new_len) for e in es if e.op == "truncate"]
    assert cuts == [("/tmp/a, b.dat", 8 * MiB), ("/tmp/a, b.dat", 4 * MiB)]
    assert st.skipped == 1 and st.untied == 1 and st.failed == 1


def test_convert_strace_says_when_ftruncate_calls_are_dropped(tmp_path, capsys):
    from perfsim.cli.main import main

    log = tmp_path / "t.strace"
    log.write_text(LOG)
    assert main(["workload", "convert-strace", str(log), "-o", str(tmp_path / "t.csv")]) == 0
    err = capsys.readouterr().err
    assert "1 ftruncate calls dropped: without strace -y" in err
    assert sum(",truncate," in x for x in (tmp_path / "t.csv").read_text().splitlines()) == 2


def test_raw_and_verbose_flags_decode_as_named_ones():
    raw = ("1 mmap(NULL, 4096, 0x3, 0x1, 3</f>, 0) = 0x10000 <0.000001>\n"
           "1 mmap(NULL, 4096, 0x1, 0x2, 3</f>, 0x1000) = 0x20000 <0.000001>\n"
           "1 mmap(NULL, 4096, 0 /* PROT_NONE */, 0x22 /* MAP_PRIVATE|MAP_ANONYMOUS */, "
           "0xffffffff, 0) = 0x30000 <0.000001>\n"
           "1 mmap(NULL, 4096, PROT_READ, MAP_SHARED_VALIDATE, 3</f>, 0) = 0x40000 <0.000001>\n")
    a, b, c, d = strace_to_entries(raw, "raw")
    assert (a.shared, a.prot, b.shared, b.prot, b.offset) == (True, "rw", False, "r", 4096)
    assert (c.backing, c.prot) == ("anon", "")
    assert d.shared


def test_dev_zero_is_shmem_shared_and_anonymous_private():
    log = ("1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 3</dev/zero>, 0) = 0x10000\n"
           "1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_PRIVATE, 3</dev/zero>, 0) = 0x20000\n")
    shared, private = strace_to_entries(log, "z")
    assert (shared.backing, private.backing, private.file) == ("shmem", "anon", None)


def test_an_unlinked_file_is_still_the_file_it_was():
    log = ("1 mmap(NULL, 8192, PROT_READ|PROT_WRITE, MAP_SHARED, 3</tmp/t>, 0) = 0x10000\n"
           "1 ftruncate(3</tmp/t (deleted)>, 4096) = 0\n")
    m, t = strace_to_entries(log, "d")
    assert m.file == t.file == "/tmp/t"


def test_mmap2_offsets_are_in_pages():
    """A 32-bit program's mmap2 takes its offset in 4096-byte units."""
    (e,) = strace_to_entries("1 mmap2(NULL, 8192, PROT_READ, MAP_SHARED, 3</f>, 0x10) = 0x10000"
                             " <0.000001>\n", "m2")
    assert e.offset == 0x10 * 4096 and e.file == "/f"


CSV_HEAD = "op,addr,old_len,new_len,flags,backing,prot,file,offset\n"


@pytest.mark.parametrize("row, says", [
    ("truncate,,,4096,,,,,", "a truncate row needs 'file'"),
    ("truncate,,,,,,,/f,", "a truncate row needs 'file'"),
    ("mmap,0x1000,4096,,MREMAP_FIXED,file,,/f,", "'flags': 'MREMAP_FIXED' is not an mmap flag"),
    ("mmap,0x1000,4096,,MAP_SHARED,file,READ,/f,", "column 'prot': 'READ'"),
    ("mmap,0x1000,4096,,MAP_SHARED,file,,/f,-4096", "column 'offset'"),
    ("fsync,0x1000,4096,,,,,,", "allowed: mremap, mmap, munmap, truncate"),
])
def test_bad_rows_are_one_line_naming_line_and_column(row, says):
    with pytest.raises(PerfsimError) as e:
        parse_trace_csv(CSV_HEAD + row + "\n", "t.csv")
    assert says in str(e.value) and str(e.value).startswith("t.csv:2:")
    assert "\n" not in str(e.value)


def _space(*vmas: Vma, thp: bool = False) -> AddressSpace:
    pt = PageTables.empty(T.arch)
    for v in vmas:
        pt = pt.populate(v.start, v.end, thp=thp)
    return AddressSpace(tuple(vmas), pt, cpus=1)


def test_a_truncation_zaps_the_pages_past_the_end_and_keeps_the_tables():
    base = 0x7F0000000000
    v = Vma(base, base + 8 * MiB, backing="file", file_id="/f", anon_vma=False)
    s = _space(v)
    cut = truncate_pagecache(T, s, "/f", 3 * MiB + 1)  # rounded up to a page
    keep = 3 * MiB + PS
    assert cut.pt.present_ptes(base, base + keep) == keep // PS
    assert cut.pt.present_ptes(base + keep, base + 8 * MiB) == 0
    for slot in range((base + 4 * MiB) >> 21, (base + 8 * MiB) >> 21):
        assert cut.pt.pmd_entry(slot)[0] == PMD_TABLE  # emptied, not freed
    assert cut.vmas == s.vmas
    assert truncate_pagecache(T, s, "/f", 8 * MiB) is s  # nothing past the end: unchanged
    assert truncate_pagecache(T, s, "/other", 0) is s


def test_a_truncation_reaches_every_mapping_of_the_file_by_its_offset():
    """Two mappings of one file (the second at file offset 4 MiB, MAP_PRIVATE: its copies
    go too, ``even_cows``) and one of another file."""
    base = 0x7F0000000000
    a = Vma(base, base + 4 * MiB, backing="file", file_id="/f", anon_vma=False)
    b = Vma(base + 8 * MiB, base + 12 * MiB, backing="file", file_id="/f", pgoff=1024,
            shared=False, anon_id="cow", name="b")
    c = Vma(base + 16 * MiB, base + 20 * MiB, backing="file", file_id="/g", anon_vma=False)
    cut = truncate_pagecache(T, _space(a, b, c), "/f", 6 * MiB)
    assert cut.pt.present_ptes(a.start, a.end) == 4 * MiB // PS
    assert cut.pt.present_ptes(b.start, b.start + 2 * MiB) == 2 * MiB // PS
    assert cut.pt.present_ptes(b.start + 2 * MiB, b.end) == 0
    assert cut.pt.present_ptes(c.start, c.end) == 4 * MiB // PS


def test_a_truncation_unmaps_whole_huge_pmds_and_splits_a_partial_one():
    base = 0x7F0000000000
    v = Vma(base, base + 8 * MiB, backing="shmem", file_id="/dev/shm/x", anon_vma=False,
            thp=True)
    s = _space(v, thp=True)
    assert s.pt.pmd_entry(base >> 21)[0] == PMD_LEAF
    cut = truncate_pagecache(T, s, "/dev/shm/x", 3 * MiB)
    assert cut.pt.pmd_entry(base >> 21)[0] == PMD_LEAF
    assert cut.pt.present_ptes(base + 3 * MiB, base + 8 * MiB) == 0
    assert [cut.pt.pmd_entry(((base + 4 * MiB) >> 21) + i)[0] for i in range(2)] == \
        [PMD_NONE, PMD_NONE]


def test_a_shrink_after_a_truncation_flushes_once():
    """The state the replay carries: a written MAP_SHARED file mapping of 64 MiB shrunk to
    32 MiB plans a forced flush per dirty PTE table it zaps; after the file was truncated to
    32 MiB there is nothing left to zap and the shrink flushes once (the freed tables)."""
    base = 0x7F0000000000

    def shrink_flushes(truncate: bool) -> int:
        es = [Entry("mmap", base, 64 * MiB, backing="file", file="/f", populate=1.0)]
        if truncate:
            es.append(Entry("truncate", 0, 0, new_len=32 * MiB, file="/f"))
        es.append(Entry("mremap", base, 64 * MiB, new_len=32 * MiB, maymove=False))
        space = AddressSpace((), PageTables.empty(T.arch), cpus=1)
        (plan,) = list(StatefulPlanner(space, es, T, seed=0))
        assert plan.errno is None
        return plan.syscall.tlb_flushes

    assert shrink_flushes(False) == 17
    assert shrink_flushes(True) == 1
