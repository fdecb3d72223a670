"""The kernel lines without a Debian image (6.8-6.11, 6.13, 6.14), and kernels named the
way ``uname -r`` prints them.

The profiles of those lines are dated field by field from each change's history
(docs/kernels.md, "The lines without a Debian image"); these tests hold what each line
decides differently from its neighbours, and the invariant every profile keeps: a field,
read in version order, never goes back to a value it left.
"""

from __future__ import annotations

import json

import pytest
from helpers import A, B

from perfsim import resolve_target
from perfsim.errors import PerfsimError
from perfsim.mm.build import Population, single_move_space
from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.madvise import madvise_dontneed
from perfsim.profiles import (
    KernelProfile,
    builtin_names,
    kernel_names,
    kernel_series,
    load_kernel,
    profile_name,
)

M = 1 << 20
NEW_LINES = ("6.8", "6.9", "6.10", "6.11", "6.13", "6.14")


# ------------------------------------------------------------------ the profiles as data
def test_every_line_from_6_7_to_6_19_has_a_profile():
    assert {f"6.{m}" for m in range(7, 20)} <= set(kernel_names())


@pytest.mark.parametrize("field", [f for f in KernelProfile.model_fields
                                   if f not in ("name", "description", "version",
                                                "stable_changes")])
def test_no_field_goes_back_to_a_value_it_left(field):
    """Read in version order, each decision changes at most once per value: a profile
    whose field went back (6.13 reclaiming tables, 6.14 not) would be a typo."""
    seen, last = [], object()
    for name in kernel_names():
        value = getattr(load_kernel(name), field)
        if value != last:
            assert value not in seen, (field, name, value, seen)
            seen.append(value)
            last = value


def test_each_line_is_named_by_its_version():
    for name in kernel_names():
        k = load_kernel(name)
        assert k.name == name and f"{k.version[0]}.{k.version[1]}" == name


# ------------------------------------------------------------------ what each line decides
def _move(kernel, length, **space):
    t = resolve_target(kernel)
    sp = single_move_space(t, src=A, length=length, populate=Population.parse("full"), **space)
    return plan_mremap(sp, MoveRequest(A, length, new_addr=B), t)


@pytest.mark.parametrize("kernel, attempts", [("6.11", None), ("6.12", 0), ("6.13", 1),
                                              ("6.14", 1), ("6.15", 1)])
def test_the_uffd_wp_gate_by_line(kernel, attempts):
    """A uffd-wp VMA without the remap event: 6.8-6.11 move its PTE table whole (no gate);
    6.12.y's backport never tries (no rmap lock); 6.13 on try once inside move_normal_pmd, with
    the rmap locks, and copy the PTEs."""
    p = _move(kernel, 2 * M, uffd_wp=True)
    if attempts is None:
        assert p.move.pmd_moves == 1 and p.move.ptes_moved == 0
    else:
        assert p.move.pmd_moves == 0 and p.move.ptes_moved == 512
        assert p.move.rmap_holds == attempts


@pytest.mark.parametrize("kernel, freed", [("6.13", 0), ("6.14", 4), ("6.15", 4)])
def test_dontneed_reclaims_whole_pte_tables_from_6_14_on_x86(kernel, freed):
    t = resolve_target(kernel)
    pmd = t.arch.pmd_size
    v = Vma(A, A + 16 * pmd, pgoff=A >> 12)
    sp = AddressSpace((v,), PageTables.empty(t.arch).populate(v.start, v.end))
    assert madvise_dontneed(t, sp, A + pmd, 4 * pmd).tables_freed == freed


@pytest.mark.parametrize("kernel, via_batch", [("6.13", False), ("6.14", True)])
def test_bare_metal_frees_tables_through_the_rcu_batch_from_6_14(kernel, via_batch):
    t = resolve_target(kernel).with_changes(platform="bare-metal")
    assert t.kernel.tables_freed_through_batch is via_batch


@pytest.mark.parametrize("kernel, limit", [("6.9", "ge"), ("6.10", "gt"), ("6.12", "gt"),
                                           ("6.13", "gt_if_tlbirange")])
def test_arm64_tlbi_range_limit_by_line(kernel, limit):
    assert load_kernel(kernel).arm64_tlbi_range_limit == limit


# ------------------------------------------------------------------ kernels named as uname -r
@pytest.mark.parametrize("release, profile", [
    ("6.18.44", "6.18"), ("6.12.117+deb13-amd64", "6.12"), ("6.8.0-45-generic", "6.8"),
    ("7.3.4+deb13-amd64", "7.3"), ("6.1.0-50-amd64", "6.1"), ("6.14", "6.14"),
    ("6.13.7-200.fc41.x86_64", "6.13"), ("6.19-rc3", "6.19")])
def test_a_release_name_reads_as_its_series(release, profile):
    assert profile_name(release) == profile
    assert load_kernel(release) == load_kernel(profile)


@pytest.mark.parametrize("name", ["6", "6.x", "linux-6.12", "6.12.toml", "", "6..12"])
def test_names_not_shaped_like_a_release_are_left_alone(name):
    assert kernel_series(name) is None
    assert profile_name(name) == name
    with pytest.raises(PerfsimError, match="unknown kernel profile"):
        load_kernel(name)


def test_a_release_of_a_line_without_a_profile_is_told_which_profiles_bracket_it():
    assert "7.1" not in builtin_names("kernels")
    with pytest.raises(PerfsimError, match="7.1.13 lies between the profiles 6.19 and 7.3"):
        load_kernel("7.1.13")
    with pytest.raises(PerfsimError) as exc:
        load_kernel("9.9.1")
    assert "lies between" not in str(exc.value)


def test_plan_takes_the_running_kernels_release(capsys):
    from perfsim.cli.main import main

    assert main(["plan", "--old-len", "4M", "--kernel", "6.8.0-45-generic", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["kernel"] == "6.8"


def test_report_kernels_take_release_names():
    from perfsim.cli.report import _with_kernels
    from perfsim.report.study import default_study

    study = _with_kernels(default_study(), "6.12.117+deb13-amd64,6.18.44")
    assert study.kernels == ["6.12", "6.18"]
    assert _with_kernels(default_study(), "6.12.5,6.18").kernels == ["6.12.5", "6.18"]
    with pytest.raises(PerfsimError, match="--kernels: unknown kernel profile '6.99.1'"):
        _with_kernels(default_study(), "6.12,6.99.1")


# ------------------------------------------------------------------ stable releases
@pytest.mark.parametrize("release, gate, align", [
    ("6.12.5", "none", "pmd_multiple"), ("6.12.10", "none", "pmd_multiple"),
    ("6.12.11", "move_page_tables", "pmd_multiple"),
    ("6.12.117+deb13-amd64", "move_page_tables", "pmd_multiple"),
    ("6.11.6", "none", "pmd_span"), ("6.11.7", "none", "pmd_multiple"),
    ("6.11.0", "none", "pmd_span"),
    ("6.11.0-19-generic", "none", "pmd_multiple")])  # Ubuntu's .0-N: the line as profiled
def test_a_stable_release_has_the_decisions_of_its_release(release, gate, align):
    k = load_kernel(release)
    assert (k.uffd_wp_table_move_gate, k.anon_thp_align) == (gate, align)


def test_an_early_6_12_release_moves_a_uffd_wp_vma_by_whole_tables():
    early, late = _move("6.12.5", 2 * M, uffd_wp=True), _move("6.12.11", 2 * M, uffd_wp=True)
    assert (early.move.pmd_moves, early.move.ptes_moved) == (1, 0)
    assert (late.move.pmd_moves, late.move.ptes_moved) == (0, 512)
    assert load_kernel("6.12.5").name == "6.12.5" and load_kernel("6.12.11").name == "6.12"


def test_release_patch_levels():
    from perfsim.profiles import release_patch

    assert [release_patch(n) for n in ("6.12.5", "6.13.7-200.fc41.x86_64", "6.11.0",
                                       "6.12", "6.8.0-45-generic", "6.19-rc3", "x")] == \
        [5, 7, 0, None, None, None, None]


@pytest.mark.parametrize("entry, message", [
    ('since = [6, 11, 7]\nfield = "anon_thp_align"\nbefore = "pmd_span"',
     "since 6.11.7 is not a release of 6.12"),
    ('since = [6, 12, 3]\nfield = "colour"\nbefore = "red"', "'colour' is not a decision"),
    ('since = [6, 12, 3]\nfield = "name"\nbefore = "x"', "'name' is not a decision"),
])
def test_a_bad_stable_change_is_one_line(tmp_path, entry, message):
    from importlib import resources

    text = (resources.files("perfsim") / "data" / "kernels" / "6.12.toml").read_text()
    path = tmp_path / "k.toml"
    path.write_text(text + "\n[[stable_changes]]\n" + entry + "\n")
    with pytest.raises(PerfsimError, match=message) as exc:
        load_kernel(str(path))
    assert "\n" not in str(exc.value)
