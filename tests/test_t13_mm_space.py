"""VMA and address-space shortcuts (issue 13) give what the dataclass machinery gives."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from perfsim.mm.pagetable import PageTables
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import BACKINGS, Vma
from perfsim.profiles import load_arch


def _vmas(rng, n: int) -> list[Vma]:
    out = []
    for _ in range(n):
        start = int(rng.integers(1, 1 << 30)) << 12
        out.append(Vma(start, start + (int(rng.integers(1, 1 << 12)) << 12),
                       backing=BACKINGS[int(rng.integers(len(BACKINGS)))],
                       thp=bool(rng.integers(2)), uffd_wp=bool(rng.integers(2)),
                       anon_vma=bool(rng.integers(2)), pgoff=int(rng.integers(1 << 20)),
                       file_id=None if rng.random() < 0.5 else f"f{rng.integers(9)}",
                       anon_id=None if rng.random() < 0.5 else f"a{rng.integers(9)}",
                       prot=["rw", "r", "rwx"][int(rng.integers(3))],
                       hugepage_size=[0, 2 << 20][int(rng.integers(2))],
                       folio_size=[0, 16 << 10][int(rng.integers(2))], stack=bool(rng.integers(2)),
                       name=f"v{rng.integers(99)}", uffd_mode=["", "wp"][int(rng.integers(2))],
                       shared=bool(rng.integers(2))))
    return out


def test_moved_is_the_vma_with_only_its_range_replaced():
    rng = np.random.default_rng(1)
    for v in _vmas(rng, 300):
        to = int(rng.integers(1, 1 << 30)) << 12
        assert v.moved(to) == dataclasses.replace(v, start=to, end=to + v.length)
        end = to + (int(rng.integers(1, 1 << 10)) << 12)
        got = v.moved(to, end)
        assert got == dataclasses.replace(v, start=to, end=end)
        assert hash(got) == hash(dataclasses.replace(v, start=to, end=end))
        assert type(got) is Vma


@pytest.mark.parametrize("length", [0, -4096])
def test_moved_to_an_empty_range_is_refused_like_the_constructor(length):
    v = Vma(0x10000, 0x20000)
    with pytest.raises(ValueError, match="empty or inverted"):
        v.moved(0x40000, 0x40000 + length)


def test_an_address_space_sorts_its_vmas_whatever_order_they_come_in():
    pt = PageTables.empty(load_arch("x86_64"))
    vmas = [Vma(0x1000, 0x3000), Vma(0x3000, 0x4000), Vma(0x8000, 0x9000), Vma(0x10000, 0x20000)]
    for order in itertools.permutations(vmas):
        space = AddressSpace(order, pt)
        assert space.vmas == tuple(vmas)
        assert space.find_vma(0x8800) == vmas[2]
        assert space.with_vmas(order).vmas == tuple(vmas)


def test_an_address_space_refuses_overlapping_vmas_in_any_order():
    pt = PageTables.empty(load_arch("x86_64"))
    vmas = [Vma(0x1000, 0x3000), Vma(0x2000, 0x4000), Vma(0x8000, 0x9000)]
    for order in itertools.permutations(vmas):
        with pytest.raises(ValueError, match=r"VMAs overlap: \[0x1000, 0x3000\) and \[0x2000"):
            AddressSpace(order, pt)


def test_an_address_space_takes_its_fields_by_position_or_name_with_the_defaults():
    pt = PageTables.empty(load_arch("x86_64"))
    v = (Vma(0x1000, 0x2000),)
    a = AddressSpace(v, pt, 3, 1, 100, 0x5000)
    b = AddressSpace(vmas=v, pt=pt, cpus=3, lazy_cpus=1, map_count_limit=100,
                     mmap_base_addr=0x5000)
    assert a == b
    assert (a.cpus, a.lazy_cpus, a.map_count_limit, a.mmap_base_addr) == (3, 1, 100, 0x5000)
    d = AddressSpace(v, pt)
    assert (d.cpus, d.lazy_cpus, d.map_count_limit, d.mmap_base_addr) == (1, 0, 65530, None)
    assert dataclasses.replace(d, cpus=7) == AddressSpace(v, pt, cpus=7)
    assert [f.name for f in dataclasses.fields(AddressSpace) if f.init] == \
        ["vmas", "pt", "cpus", "lazy_cpus", "map_count_limit", "mmap_base_addr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.cpus = 2


def test_vma_init_takes_the_fields_in_order_with_their_declared_defaults():
    import inspect

    params = list(inspect.signature(Vma.__init__).parameters.values())[1:]
    fields = dataclasses.fields(Vma)
    assert [p.name for p in params] == [f.name for f in fields]
    for p, f in zip(params, fields, strict=True):
        assert p.default == (inspect.Parameter.empty if f.default is dataclasses.MISSING
                             else f.default), f.name
        assert f.init


def test_vma_fields_are_the_arguments_given_by_position_or_name():
    rng = np.random.default_rng(2)
    names = [f.name for f in dataclasses.fields(Vma)]
    for v in _vmas(rng, 100):
        values = [getattr(v, n) for n in names]
        by_pos = Vma(*values)
        by_name = Vma(**dict(zip(names, values, strict=True)))
        assert by_pos == by_name == v and hash(by_pos) == hash(v)
        assert dataclasses.replace(v) == v
        assert dataclasses.astuple(by_pos) == tuple(values)
    d = Vma(0x1000, 0x2000)
    rest = [f for f in dataclasses.fields(Vma)][2:]
    assert [getattr(d, f.name) for f in rest if f.name != "account"] == \
        [f.default for f in rest if f.name != "account"]
    # account's default, None, is what mmap sets: a private writable mapping is charged
    assert d.account is True and Vma(0x1000, 0x2000, prot="r").account is False
    assert Vma(0x1000, 0x2000, noreserve=True).account is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.start = 0
    with pytest.raises(ValueError, match=r"VMA \[0x2000, 0x1000\) is empty or inverted"):
        Vma(0x2000, 0x1000)
