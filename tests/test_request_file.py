"""Request files describe the address space: ``[[vma]]`` tables, the call's flags, and one
line for every mistake naming the table, the key and what is allowed."""

from __future__ import annotations

import json

import pytest

from perfsim.cli.main import main
from perfsim.planner.request import DST_BASE, SRC_BASE
from perfsim.request_file import DEFAULTS, KEYS, VMA_KEYS, PlanRequest, parse_request

K, M = 1 << 10, 1 << 20


def plan_file(capsys, tmp_path, text, *extra):
    f = tmp_path / "req.toml"
    f.write_text(text)
    rc = main(["plan", "--file", str(f), *extra])
    out, err = capsys.readouterr()
    return rc, out, err, str(f)


def test_every_key_has_a_default_and_help():
    for name, field in PlanRequest.model_fields.items():
        assert field.description, name
    assert DEFAULTS["fixed"] is True and DEFAULTS["maymove"] is True and DEFAULTS["cpus"] == 1
    assert KEYS[:2] == ("description", "old_addr") and "vma" in KEYS
    assert set(VMA_KEYS) >= {"start", "size", "backing", "prot", "populate", "thp", "folio_size",
                             "pgoff", "file", "uffd", "touched"}


def test_vma_tables_are_the_whole_address_space(capsys, tmp_path):
    rc, out, err, _ = plan_file(capsys, tmp_path, '''
old_len = "8K"
old_addr = "A"
new_addr = "B"
[[vma]]
start = "A"
size = "8K"
backing = "shmem"
file = "f"
[[vma]]
start = "A+1M"
size = "4K"
prot = "none"
touched = false
''', "--json")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["errno"] is None
    assert doc["vmas_after"] == [
        {"start": SRC_BASE + M, "end": SRC_BASE + M + 4 * K, "backing": "anon", "prot": "none"},
        {"start": DST_BASE, "end": DST_BASE + 8 * K, "backing": "shmem", "prot": "rw"}]


def test_a_multi_vma_move_that_fails_part_way_says_which_moved(capsys, tmp_path):
    rc, out, err, _ = plan_file(capsys, tmp_path, '''
old_len = "12K"
old_addr = "A"
new_addr = "B"
[[vma]]
start = "A"
size = "4K"
[[vma]]
start = "A+8K"
size = "4K"
uffd = "missing"
''', "--json")
    doc = json.loads(out)
    assert doc["errno"] == "EFAULT" and [m["src_start"] for m in doc["moved"]] == [SRC_BASE]
    assert "1 VMA piece(s) moved before it" in doc["note"]


def test_flags_as_the_syscall_takes_them():
    r = parse_request('old_len = "4K"\nmaymove = false\nfixed = false\ndontunmap = false\n')
    assert r.given() == {"old_len": "4K", "maymove": False, "fixed": False, "dontunmap": False}


@pytest.mark.parametrize("text, needle", [
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\nbacking = "ram"\n',
     "[[vma]] #1: key 'backing': got 'ram'; allowed: one of anon, shmem, file, hugetlb"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\n[[vma]]\nstart = "B"\nsize = "4K"\n'
     'uffd = "sometimes"\n', "[[vma]] #2: key 'uffd': got 'sometimes'; allowed: \"missing\" or"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\n', "[[vma]] #1: key 'size' is required"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\nprot = "rwq"\n', "[[vma]] #1: key 'prot'"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\ncolor = 1\n',
     "[[vma]] #1: unknown key 'color'; allowed keys: start, size, backing"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\npopulate = "every:0"\n',
     "vma #1 populate: 'every:K' needs an integer K >= 1"),
    ('old_len = "1G"\n[[vma]]\nstart = "A"\nsize = "4K"\nfolio_size = "3K"\n',
     "vma #1 folio_size: 3K is not an mTHP folio size; allowed: 16K"),
    ('old_len = "1G"\nmaymove = "maybe"\n', "key 'maymove'"),
])
def test_bad_request_file_is_one_line_naming_table_and_key(capsys, tmp_path, text, needle):
    rc, out, err, path = plan_file(capsys, tmp_path, text)
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert needle in err, err


def test_non_utf8_request_file_is_one_line(capsys, tmp_path):
    f = tmp_path / "req.toml"
    f.write_bytes(b'old_len = "1G"\ndescription = "caf\xe9"\n')
    rc = main(["plan", "--file", str(f)])
    err = capsys.readouterr().err
    assert rc == 2 and "not UTF-8" in err and str(f) in err and err.count("\n") == 1


def test_every_shipped_example_plans(capsys):
    from pathlib import Path

    examples = sorted((Path(__file__).resolve().parents[1] / "examples" / "plan").glob("*.toml"))
    assert len(examples) >= 6
    for path in examples:
        rc = main(["plan", "--file", str(path), "--json"])
        out, err = capsys.readouterr()
        assert rc == 0 and err == "", (path, err)
        assert json.loads(out)["errno"] is None, path


def test_multi_vma_example_is_efault_before_617(capsys):
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "plan" / "multi_vma.toml"
    rc = main(["plan", "--file", str(path), "--kernel", "6.15", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 0 and doc["errno"] == "EFAULT" and doc["moved"] == []


SHRINK_SHMEM = '''
old_addr = "A"
old_len = "4M"
new_len = "2M"
maymove = false
fixed = false
[[vma]]
start = "A"
size = "4M"
backing = "shmem"
file = "f"
'''


def test_a_map_private_shmem_vma_zaps_like_anonymous_memory(capsys, tmp_path):
    """``shared = false``: MAP_PRIVATE, whose written pages are anonymous copies, so the
    zap of the shrunk tail is not forced to flush per PTE table (``zap_forces_flush``)."""
    rc, out, err, _ = plan_file(capsys, tmp_path, SHRINK_SHMEM, "--json")
    assert rc == 0, err
    shared = json.loads(out)["syscall"]
    rc, out, err, _ = plan_file(capsys, tmp_path, SHRINK_SHMEM + "shared = false\n", "--json")
    assert rc == 0, err
    private = json.loads(out)["syscall"]
    assert (shared["tlb_flushes"], shared["tlb_full_flushes"]) == (2, 1)
    assert (private["tlb_flushes"], private["tlb_full_flushes"]) == (1, 1)


def test_shared_false_on_anonymous_memory_is_one_line(capsys, tmp_path):
    rc, out, err, f = plan_file(capsys, tmp_path, '''
old_len = "4K"
[[vma]]
start = "A"
size = "4K"
shared = false
''')
    assert rc == 2 and not out
    assert err.count("\n") == 1 and "shared = false applies to file and shmem" in err
