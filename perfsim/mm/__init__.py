"""Address space (VMAs), compact page-table state, and building both as a program would."""

from perfsim.mm.build import Population, VmaSpec, build_space, single_move_space
from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Backing, Vma

__all__ = [
    "AddressSpace", "Backing", "PageTables", "Population", "Vma", "VmaSpec", "build_space",
    "single_move_space",
    "PMD_NONE", "PMD_TABLE", "PMD_LEAF", "PUD_NONE", "PUD_TABLE", "PUD_LEAF",
]
