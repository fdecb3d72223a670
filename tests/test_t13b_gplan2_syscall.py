"""The syscall layer's deferred realignment reason held to the eager one.

``move_vma`` and ``relocate_vma_down`` record a :class:`RealignReason` (``explain_realign``
worked out when ``MovedRange.realign`` is first read) instead of the text: the text read
later is the text ``explain_realign`` gives before ``try_realign_addr`` moves the starts,
and a range made with a reason reads, compares, hashes, copies and pickles as the one made
with its text.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import random

import pytest

from perfsim import resolve_target
from perfsim.mm.build import Population, VmaSpec, build_space, single_move_space
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.planner.explain import RealignReason, explain_realign
from perfsim.planner.realign import PageTableMoveControl, try_realign_addr
from perfsim.planner.syscall import copy_vma
from perfsim.planner.vma_remap import MovedRange

K, M, G = 1 << 10, 1 << 20, 1 << 30
KERNELS = ("6.6", "6.12", "6.18")
ARCHES = ("x86_64", "arm64-4k", "arm64-16k", "riscv-sv39")


def _case(rng: random.Random):
    t = resolve_target(rng.choice(KERNELS), rng.choice(ARCHES))
    if rng.random() < 0.3:
        t = t.with_changes(**{"kernel.realign_pud": True})
    a = t.arch
    pg, P = a.page_size, a.pmd_size
    length = rng.choice((pg, 7 * pg, P - pg, P, P + 3 * pg, 3 * P + rng.randint(1, 99) * pg))
    src = 8 * a.pud_size + rng.choice((0, pg, P - pg, P // 2)) + rng.randint(0, 3) * P
    dst = src + 4 * a.pud_size + rng.choice((0, pg, src % P, P - src % P))
    dst -= dst % pg
    specs = [VmaSpec(src, length, populate=Population.parse("full"), name="src")]
    if rng.random() < 0.3:
        specs.append(VmaSpec(src - pg, pg, prot="r", file="guard", name="guard"))
    if rng.random() < 0.3:
        specs.append(VmaSpec(dst - dst % P + rng.choice((0, pg)), pg, prot="r", file="dguard",
                             name="dguard"))
        if specs[-1].start + pg > dst:
            specs.pop()
    return t, build_space(t, specs), src, dst, length


@pytest.mark.parametrize("seed", range(200))
def test_reason_read_later_is_the_eager_explanation(seed):
    t, space, src, dst, length = _case(random.Random(seed))
    vma = space.find_vma(src)
    new, absorbed, need = copy_vma(space, vma, dst, length, vma.pgoff)
    during = space.with_vma_added(new, without=absorbed)
    pmc = PageTableMoveControl(vma, new, src, dst, length, need_rmap_locks=need)
    eager = explain_realign(during, PageTableMoveControl(vma, new, src, dst, length,
                                                         need_rmap_locks=need), t)
    why = RealignReason(during, pmc, t)
    try_realign_addr(during, pmc, t)  # moves pmc's starts: the reason kept them as they were
    assert why.text() == eager


def test_a_range_with_a_reason_is_the_range_with_its_text():
    t = resolve_target("6.18", "x86_64")
    src, dst, length = 0x300000000000 + 2 * M + 4 * K, 0x300000000000 + 2 * G + 6 * M + 8 * K, 4 * M
    space = single_move_space(t, src=src, length=length, populate=Population.parse("full"))
    vma = space.vmas[0]
    new, _, need = copy_vma(space, vma, dst, length, vma.pgoff)
    during = space.with_vma_added(new)
    pmc = PageTableMoveControl(vma, new, src, dst, length)
    text = explain_realign(during, pmc, t)
    assert text.startswith("(c)")

    def made(reason):
        return MovedRange(src, src + length, dst, length, False, reason, need, "reference")

    plain = made(text)
    for read in (lambda m: m.realign, lambda m: m == plain, repr, hash, MovedRange.to_json,
                 lambda m: dataclasses.replace(m, reverted=True).realign, copy.deepcopy,
                 lambda m: pickle.loads(pickle.dumps(m))):
        lazy = made(RealignReason(during, pmc, t))
        got, want = read(lazy), read(plain)
        assert got == want
        assert lazy == plain and lazy.realign == text
    lazy = made(RealignReason(during, pmc, t))
    blob = pickle.dumps(lazy)  # the text, not the space the reason would be made from
    assert b"RealignReason" not in blob and b"AddressSpace" not in blob
    assert lazy.__dict__["realign"] == text  # (pickling read it: made once)
    assert pickle.loads(blob).__dict__["realign"] == text


def test_a_plans_reason_is_made_when_read():
    t = resolve_target("6.18", "x86_64")
    src = 0x300000000000 + 2 * M + 4 * K
    space = single_move_space(t, src=src, length=64 * K, populate=Population.parse("full"))
    plan = plan_mremap(space, MoveRequest(src, 64 * K, new_addr=src + 4 * G), t)
    assert isinstance(plan.moved[0].__dict__["realign"], RealignReason)
    assert plan.realign_reason.startswith("(a) refused")
    assert plan.moved[0].__dict__["realign"] == plan.realign_reason
