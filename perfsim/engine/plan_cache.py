"""Plans of one run, reused when a request meets an address space it has met before.

``plan_mremap(space, request, target)`` is a pure function of its arguments' *contents*, so
a plan computed once is the plan of every later call with equal inputs. In a run a caller
often meets the same state again: a region moved back and forth (the contention scenarios,
``bench/bench_engine.py``), a call stream replayed with ``repeat``. :class:`PlanCache` keys
each plan by a content :func:`fingerprint` of everything the planner is given: every field
of the address space (its VMAs, every array of its page tables, its CPU counts and limits),
the request, and the target's digest. The fingerprint walks the dataclass fields
generically, so a field added to ``AddressSpace`` or ``PageTables`` is part of the key
without a change here. One cache per :class:`~perfsim.engine.machine.Machine`: runs share
nothing. ``tests/test_plan_cache.py`` holds cached plans to freshly computed ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict

import numpy as np


def _feed(h, obj) -> None:
    """Feed ``obj``'s content to the hash ``h`` (type-tagged, so values never collide with
    values of another type that print alike)."""
    if isinstance(obj, np.ndarray):
        h.update(b"A" + obj.dtype.str.encode() + repr(obj.shape).encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        h.update(b"D" + type(obj).__qualname__.encode())
        skip = ()
        table = _pte_table_bitmaps(obj)
        if table is not None:
            # Page tables keep their PTE bitmaps deduplicated in a table that only grows;
            # two states with the same tables can number its rows differently. Hash the
            # bitmap each PMD entry refers to instead of the numbering.
            h.update(b"Fpte_tables")
            _feed(h, table)
            skip = ("pmd_mask", "masks", "mask_pop")
        for f in dataclasses.fields(obj):
            if f.name in skip:
                continue
            h.update(b"F" + f.name.encode())
            _feed(h, getattr(obj, f.name))
    elif isinstance(obj, (tuple, list)):
        h.update(b"T%d" % len(obj))
        for x in obj:
            _feed(h, x)
    elif isinstance(obj, (frozenset, set)):
        items = sorted(obj, key=repr)
        h.update(b"S%d" % len(items))
        for x in items:
            _feed(h, x)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, np.generic)):
        h.update(b"V" + type(obj).__name__.encode() + b":" + repr(obj).encode())
    elif isinstance(obj, dict):
        items = sorted(obj.items(), key=lambda kv: repr(kv[0]))
        h.update(b"M%d" % len(items))
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif hasattr(obj, "model_dump_json"):  # pydantic profiles (the page tables' arch)
        h.update(b"P" + type(obj).__qualname__.encode() + obj.model_dump_json().encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(obj).__name__}")


def _pte_table_bitmaps(obj) -> np.ndarray | None:
    """``masks[pmd_mask]`` (one bitmap row per PMD entry) for page tables that number their
    bitmaps in a row table (``pmd_mask`` row ids into ``masks``, ``mask_pop`` their
    popcounts); None for anything else, which is then hashed field by field."""
    ids, masks = getattr(obj, "pmd_mask", None), getattr(obj, "masks", None)
    if not (isinstance(ids, np.ndarray) and isinstance(masks, np.ndarray)
            and ids.dtype.kind in "iu" and ids.ndim == 1 and masks.ndim == 2
            and hasattr(obj, "mask_pop")):
        return None
    if len(ids) and (ids.min() < 0 or ids.max() >= len(masks)):
        return None
    return masks[ids]


def content_bytes(obj) -> int:
    """About how many bytes :func:`fingerprint` would hash for ``obj`` (its arrays; the PTE
    bitmaps as gathered per PMD entry), without hashing anything."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        n = 0
        ids, masks = getattr(obj, "pmd_mask", None), getattr(obj, "masks", None)
        if isinstance(ids, np.ndarray) and isinstance(masks, np.ndarray) and masks.ndim == 2:
            n += len(ids) * masks.shape[1] * masks.itemsize
        return n + sum(content_bytes(getattr(obj, f.name)) for f in dataclasses.fields(obj))
    if isinstance(obj, (tuple, list)):
        return sum(content_bytes(x) for x in obj)
    return 0


def fingerprint(*objs) -> bytes:
    """A content digest (BLAKE2b, 32 bytes) of ``objs``."""
    h = hashlib.blake2b(digest_size=32)
    for o in objs:
        _feed(h, o)
    return h.digest()


class PlanCache:
    """``plan(space, request, target)`` with reuse (module docstring); LRU, at most
    ``max_entries`` plans. Spaces whose content is larger than ``max_bytes`` (hundreds of
    GiB populated) are planned directly: hashing them would cost about what planning does,
    and keeping their plans would hold their page tables in memory."""

    hits = 0  # (counters every cache starts from: set on the instance when they change)
    misses = 0

    def __init__(self, max_entries: int = 64, max_bytes: int = 8 << 20) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict = OrderedDict()

    def plan(self, space, request, target):
        from perfsim.planner import plan_mremap

        if content_bytes(space) > self.max_bytes:
            return plan_mremap(space, request, target)
        try:
            key = (target.digest, fingerprint(space, request))
        except TypeError:  # a field of a type the fingerprint does not know: no reuse
            return plan_mremap(space, request, target)
        p = self.entries.get(key)
        if p is not None:
            self.hits += 1
            self.entries.move_to_end(key)
            return p
        self.misses += 1
        p = plan_mremap(space, request, target)
        self.entries[key] = p
        if len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return p
