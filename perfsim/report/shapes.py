"""The five alignment classes as concrete moves, and the plans of single calls.

Addresses are those of the worked examples E1–E4 of docs/kernel-rules.md::

    A = 0x7f0000200000   B = 0x7f4000600000   (2 MiB-aligned, not 1 GiB-aligned)

    pud          0x7f0000000000 → 0x7f4000000000      both PUD-aligned (E1)
    pmd          A              → B                   both PMD-aligned
    realignable  A+4K           → B+4K                mutually aligned, nothing below (E2)
    blocked      A+4K           → B+4K, VMA [A, A+4K) mutually aligned, realignment refused (E3)
    unaligned    A+4K           → B+8K                not mutually aligned (E4)
"""

from __future__ import annotations

from functools import lru_cache

from perfsim.mm.build import Population, single_move_space
from perfsim.planner import MoveRequest, plan_mremap
from perfsim.profiles import Target, resolve_target

K = 1 << 10
A, B = 0x7F0000200000, 0x7F4000600000
PUD_SRC, PUD_DST = 0x7F0000000000, 0x7F4000000000

#: class → (source, destination, VMA below the source)
SHAPES: dict[str, tuple[int, int, bool]] = {
    "pud": (PUD_SRC, PUD_DST, False),
    "pmd": (A, B, False),
    "realignable": (A + 4 * K, B + 4 * K, False),
    "blocked": (A + 4 * K, B + 4 * K, True),
    "unaligned": (A + 4 * K, B + 8 * K, False),
}


@lru_cache(maxsize=64)
def target_for(kernel: str, arch: str) -> Target:
    return resolve_target(kernel, arch)


def space_for(target: Target, cls: str, size: int, *, backing: str = "anon", thp: bool = False,
              populate: str = "full", cpus: int = 1):
    src, _, guard = SHAPES[cls]
    return single_move_space(target, src=src, length=size, backing=backing, thp=thp,
                             populate=Population.parse(populate), guard_below_src=guard,
                             cpus=cpus)


def request_for(cls: str, size: int) -> MoveRequest:
    src, dst, _ = SHAPES[cls]
    return MoveRequest(src, size, new_addr=dst)


def plan_call(target: Target, cls: str, size: int, *, backing: str = "anon", thp: bool = False,
              populate: str = "full", cpus: int = 1):
    """The plan of one ``mremap(src, size, size, MAYMOVE|FIXED, dst)`` of class ``cls``."""
    sp = space_for(target, cls, size, backing=backing, thp=thp, populate=populate, cpus=cpus)
    return plan_mremap(sp, request_for(cls, size), target)
