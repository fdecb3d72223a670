"""The page tables of one planned call, with at most one walk window open over them.

A walked call (a small move, its unmaps) edits the page tables through a
:class:`~perfsim.mm.pagetable.Window`: a dict view of whole PUD slots, written back with
:meth:`~perfsim.mm.pagetable.PageTables.replace_window`. Opening and writing back a window
costs more than walking a few extents, and one call used to do it for every step
(the destination's unmap, the move, the source's unmap). :class:`CallTables` keeps one
window open across the steps of a call instead, widening it to the PUD slots each step
reads, and writes it back once: when an array driver needs the tables as a value, or when
the plan is made.

The result is the same: a window holds every entry of its PUD slots, so a step sees in the
open window exactly what it would see in a window freshly read from the written-back
state, and the final write-back replaces the same slots with the same entries. The one rule
that looks at which slots a window covers (``free_pgd_range``'s PUD-table test, see
:func:`~perfsim.planner.unmap.free_pgd_range`) is given the slots of the window that step
would have read. (Only the numbering of the bitmap rows inside the value can differ; no
result reads it.)
"""

from __future__ import annotations

from perfsim.mm.pagetable import PageTables, Window


class CallTables:
    """The page tables of one call: a :class:`PageTables` value and at most one open
    :class:`Window` over it holding the edits made since (see the module docstring)."""

    __slots__ = ("_pt", "_win", "arch")

    def __init__(self, pt: PageTables) -> None:
        self._pt = pt
        self._win: Window | None = None
        self.arch = pt.arch

    def window(self, start: int, end: int) -> Window:
        """The open window, widened (from the value it was opened on) to cover the PUD
        slots of ``[start, end)``; opened if none is."""
        win = self._win
        if win is None:
            win = self._win = self._pt.window(start, end)
            return win
        shift = self.arch.pud_shift
        lo, hi = start >> shift, ((end - 1) >> shift) + 1
        if win.lo <= lo and hi <= win.hi:
            return win
        new_lo, new_hi = min(lo, win.lo), max(hi, win.hi)
        for s, e in ((new_lo, win.lo), (win.hi, new_hi)):
            if s < e:  # slots the window did not cover: unchanged in the value
                part = self._pt.window(s << shift, e << shift)
                win.pud.update(part.pud)
                win.pmd.update(part.pmd)
        win.lo, win.hi = new_lo, new_hi
        return win

    def value(self) -> PageTables:
        """The page tables as a value, the open window (if any) written back and closed."""
        if self._win is not None:
            self._pt = self._pt.replace_window(self._win)
            self._win = None
        return self._pt

    def set_value(self, pt: PageTables) -> None:
        """Replace the tables by ``pt`` (what an array driver made from :meth:`value`)."""
        assert self._win is None, "set_value with a window open"
        self._pt = pt
