"""What a replayed program wrote just before each of its mremap calls, as far as its log
tells: the bytes the cost profile's ``[cold_cache]`` term charges a call for
(:class:`perfsim.cost.profile.ColdCache`: the caller's own memory traffic evicting the
kernel's working set from the caches).

Two parts of a program's traffic show in a trace, and a replay assumes both written
(:class:`perfsim.workload.generate.StatefulPlanner`): the part the block's previous growth
added (a program grows memory to fill it), and the private read-write anonymous memory it
mapped since its previous mremap (``mmap`` rows, its heap's ``brk`` growth among them), at
each row's ``populate``; the kernel zeroes each such page at its first fault. What it
wrote into memory it already had is in no log, so the figure is a lower bound. Not a
kernel rule; docs/real-programs.md, "An awk program", has the evidence.
"""

from __future__ import annotations


class WrittenBefore:
    """Fed a replay's entries in order (:meth:`see` for each that is not an mremap,
    :meth:`call` for each mremap with its plan), gives each call's bytes written before it."""

    __slots__ = ("_fresh", "_grown")

    def __init__(self) -> None:
        self._fresh = 0.0  # new private writable anonymous memory since the last mremap
        #: (address, length) a growth left -> the bytes it added
        self._grown: dict[tuple[int, int], int] = {}

    def see(self, entry) -> None:
        """An entry between two mremaps: a new private writable anonymous mapping counts."""
        if entry.op == "mmap" and entry.backing == "anon" and not entry.shared \
                and "w" in entry.prot:
            self._fresh += entry.old_len * entry.populate

    def call(self, entry, plan) -> int:
        """The bytes written before the mremap ``entry`` (planned as ``plan``), and the
        growth it leaves for the block's next call to find written."""
        got = self._grown.get((entry.old_addr, entry.old_len), 0) + int(self._fresh)
        self._fresh = 0.0
        new_len = entry.new_len
        if plan.errno is None and plan.result_addr is not None and new_len is not None \
                and new_len > entry.old_len:
            self._grown[(plan.result_addr, new_len)] = new_len - entry.old_len
        return got


def written_before_calls(entries, plans) -> list[int]:
    """:class:`WrittenBefore` of each mremap of ``entries``, ``plans`` being their plans
    (one per mremap entry, in order)."""
    wb = WrittenBefore()
    out = []
    plans = iter(plans)
    for e in entries:
        if e.op == "mremap":
            out.append(wb.call(e, next(plans)))
        else:
            wb.see(e)
    return out
