"""Address space (VMAs) and compact page-table state."""

from perfsim.mm.pagetable import PMD_LEAF, PMD_NONE, PMD_TABLE, PUD_LEAF, PUD_NONE, PUD_TABLE, PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import Backing, Vma

__all__ = [
    "AddressSpace", "Backing", "PageTables", "Vma",
    "PMD_NONE", "PMD_TABLE", "PMD_LEAF", "PUD_NONE", "PUD_TABLE", "PUD_LEAF",
]
