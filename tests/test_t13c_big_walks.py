"""Issue 13, sixth pass ("bigcall"): a move of a few dozen PMD slots is walked unless the
closed form plans it, and the unmap of its source likewise; every plan is the one the
reference walk and the vectorised path make (all but the name of the planner that ran)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Vma
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.options import (
    WALK_MAX_PMD_SLOTS,
    WALK_UNLESS_CLOSED_MAX_PMD_SLOTS,
    PlanOptions,
)
from perfsim.profiles import resolve_target

AUTO, REF, FAST = PlanOptions(), PlanOptions("reference"), PlanOptions("fast")


def _bench_plan_digest():
    """``bench/bench_plan_walk.py``'s plan digest: the hash of every result field of a plan
    (errno, result, moved ranges, note, every step column with its dtype, the rmap lock
    names per row, the VMAs and page tables after) and, apart, its planner labels."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_plan_walk.py"
    spec = importlib.util.spec_from_file_location("bench_plan_walk", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._plan_digest


_PLAN_DIGEST = _bench_plan_digest()


def _digest(plan) -> str:
    """Every field of a plan but ``planner`` (the digest's first part)."""
    return _PLAN_DIGEST(plan)[0]


def _span_slots(t, start: int, length: int) -> int:
    s = t.arch.pmd_shift
    return ((start + length - 1) >> s) - (start >> s) + 1


def _same_three_ways(space, req, t) -> str:
    """The default plan equals the walked one and (where it applies) the vectorised one;
    returns the default plan's planner name."""
    auto = plan_mremap(space, req, t, AUTO)
    assert _digest(auto) == _digest(plan_mremap(space, req, t, REF))
    try:
        fast = plan_mremap(space, req, t, FAST)
    except AssertionError:  # the vectorised path declines this move
        return auto.planner
    assert _digest(auto) == _digest(fast)
    return auto.planner


def _hand_case(rng, arch: str, kernel: str):
    t = resolve_target(kernel, arch)
    a = t.arch
    page, pmd = a.page_size, a.pmd_size
    slots = int(rng.integers(WALK_MAX_PMD_SLOTS, WALK_UNLESS_CLOSED_MAX_PMD_SLOTS + 4))
    base_src = a.user_va_top // 4 - (a.user_va_top // 4) % a.pud_size
    base_dst = a.user_va_top // 2 - (a.user_va_top // 2) % a.pud_size
    ptrs = pmd // page
    s_off = int(rng.choice([0, int(rng.integers(1, ptrs))]))
    d_off = int(rng.choice([s_off, 0, int(rng.integers(1, ptrs))]))
    src = base_src + int(rng.integers(0, 3)) * pmd + s_off * page
    dst = base_dst + int(rng.integers(0, 3)) * pmd + d_off * page
    size = slots * pmd - int(rng.integers(0, ptrs)) * page
    thp = bool(rng.random() < 0.3)
    backing = str(rng.choice(["anon", "anon", "file", "shmem"]))
    anon = backing == "anon"
    vmas = [Vma(src, src + size, backing=backing, thp=thp, anon_vma=anon,
                pgoff=(src // page) if anon else 0, file_id=None if anon else "f",
                anon_id="a" if anon else None, name="src")]
    pt = PageTables.empty(a)
    kind = rng.random()
    if kind < 0.35:
        pt = pt.populate(src, src + size, thp=thp)
    elif kind < 0.8:
        pt = pt.populate(src, src + size, fraction=float(rng.uniform(0.05, 0.95)),
                         seed=int(rng.integers(0, 1 << 30)), thp=thp)
    if rng.random() < 0.25:  # a populated mapping at the destination (MREMAP_FIXED unmaps it)
        vmas.append(Vma(dst, dst + pmd, anon_vma=True, anon_id="d", pgoff=dst // page,
                        name="dst"))
        pt = pt.populate(dst, dst + pmd, fraction=0.5, seed=3)
    if rng.random() < 0.25 and src % pmd:  # a guard page below the source, in its PMD
        vmas.append(Vma(src - page, src, prot="r", anon_id="g", name="guard"))
        pt = pt.populate(src - page, src)
    vmas.sort(key=lambda v: v.start)
    space = AddressSpace(tuple(vmas), pt, cpus=int(rng.integers(1, 5)))
    fail = int(rng.integers(1, 6)) if rng.random() < 0.1 else None
    dontunmap = bool(rng.random() < 0.1) and anon
    req = MoveRequest(src, size, size, dst, True, True, dontunmap, False, fail, 0)
    return space, req, t


@pytest.mark.parametrize("arch", ["x86_64", "arm64-4k", "arm64-16k", "riscv-sv39"])
@pytest.mark.parametrize("kernel", ["6.6", "6.18"])
def test_a_move_of_a_few_dozen_slots_is_the_plan_both_paths_make(arch, kernel):
    # seeded by the case's name (str hashes vary per process; crc32 does not)
    rng = np.random.default_rng(zlib.crc32(f"{arch} {kernel}".encode()))
    for _ in range(12):
        space, req, t = _hand_case(rng, arch, kernel)
        _same_three_ways(space, req, t)


@pytest.mark.parametrize("seed", [5, 17])
def test_the_workloads_calls_of_a_few_dozen_slots_are_the_plans_both_paths_make(seed):
    from perfsim.workload import load_workload, resolve_workload, workload_names
    from perfsim.workload.generate import SyntheticDraws, layout_call

    t = resolve_target("6.18", "x86_64")
    seen = 0
    for name in workload_names():
        w = load_workload(resolve_workload(name))
        root = np.random.SeedSequence(seed)
        for i, s in enumerate(w.streams):
            if not hasattr(s, "src_align"):
                continue
            it = iter(SyntheticDraws(s, root, i))
            for _ in range(60):
                space, req = layout_call(next(it), s, t, 4)
                n = _span_slots(t, req.old_addr, req.old_len)
                if WALK_MAX_PMD_SLOTS < n <= WALK_UNLESS_CLOSED_MAX_PMD_SLOTS + 2:
                    _same_three_ways(space, req, t)
                    seen += 1
    assert seen >= 10


def _move(t, slots: int, *, aligned: bool, full: bool = True):
    a = t.arch
    page, pmd = a.page_size, a.pmd_size
    src = 0x7F0000000000 + (0 if aligned else 5 * page)
    dst = 0x7E0000000000 + (0 if aligned else 77 * page)
    size = slots * pmd - (0 if aligned else 10 * page)
    vma = Vma(src, src + size, anon_vma=True, anon_id="x", pgoff=src // page)
    kw = {} if full else {"fraction": 0.4, "seed": 1}
    space = AddressSpace((vma,), PageTables.empty(a).populate(src, src + size, **kw), cpus=2)
    return space, MoveRequest(src, size, size, dst, True, True, False, False, None, 0)


def test_walks_unless_closed_is_a_span_of_at_most_the_limit_and_only_for_auto():
    shift = 21
    lo = 0x7F0000000000
    top = WALK_UNLESS_CLOSED_MAX_PMD_SLOTS
    assert AUTO.walks_unless_closed(shift, lo, lo + (top << shift))
    assert not AUTO.walks_unless_closed(shift, lo, lo + (top << shift) + 4096)
    assert AUTO.walks_unless_closed(shift, lo + 4096, lo + (top << shift))
    assert not REF.walks_unless_closed(shift, lo, lo + (2 << shift))
    assert not FAST.walks_unless_closed(shift, lo, lo + (2 << shift))


@pytest.mark.parametrize("slots", [WALK_MAX_PMD_SLOTS + 2, 32, WALK_UNLESS_CLOSED_MAX_PMD_SLOTS - 1])
def test_a_few_dozen_slot_move_is_vectorised_only_in_closed_form(slots):
    t = resolve_target("6.18", "x86_64")
    # (the unaligned destination spans one slot more than ``slots``)
    # fully populated, mutually unaligned: the closed form plans it
    space, req = _move(t, slots, aligned=False)
    assert _same_three_ways(space, req, t) == "fast"
    # PMD-aligned (whole-entry moves) or sparse: not the closed form, so walked
    for space, req in (_move(t, slots, aligned=True), _move(t, slots, aligned=False, full=False)):
        assert _same_three_ways(space, req, t) == "reference"


def test_beyond_the_limit_the_vectorised_path_plans_any_shape():
    t = resolve_target("6.18", "x86_64")
    space, req = _move(t, WALK_UNLESS_CLOSED_MAX_PMD_SLOTS + 8, aligned=True)
    assert _same_three_ways(space, req, t) == "fast"
