#!/usr/bin/env python3
"""CPU time of ``plan_mremap`` on walked (small) moves, and digests of the plans it makes.

    python bench/bench_plan_walk.py [--against TREE]            # CPU µs per plan
    python bench/bench_plan_walk.py --digest [--against TREE]   # plan digests, compared

Timing: the first ``--calls`` calls of every synthetic stream of ``ipi_storm`` and
``allocator_realloc`` (``SyntheticDraws`` from seed 5, an mm of 4 CPUs, 6.18 x86-64, the
inputs of ``bench/bench_call_parts.py``) are laid out once and planned ``--reps`` times;
the best CPU time (``time.process_time``) per plan is printed, alone (``plan``) and with
the plan's step columns read (``plan+cols``: what the engine's pricing reads next). With
``--against TREE`` the other tree is measured in a child process first, alternating
``--rounds`` times, and the ratio of the best times is printed.

Digest (``--digest``): a seeded grid of requests (every shipped workload's synthetic calls
on three targets, plus random single-VMA moves, shrinks, expands, non-fixed and
DONTUNMAP moves, mapped destinations, multi-VMA moves, injected allocation failures and
exec stack moves over six kernels and four architectures) is planned with the default
options and with ``PlanOptions("reference")``; every field of each plan (errno, result,
moved ranges, note, every step column with its dtype, the rmap lock names per row, the
VMAs and page-table contents after) is hashed, and the plan's ``planner`` labels (which
path planned it and each moved range: not a result) are kept beside the hash.
``--against TREE`` prints the first cases whose digest differs and how many plans were
made by another path with the same result; exit status 1 if any result differs. Not timed.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tree import at_least_one, require_tree, use_tree  # noqa: E402

ROOT = use_tree(__file__)


def _workload_pairs(names, calls: int, target, cpus: int = 4):
    import numpy as np

    from perfsim.workload import load_workload, resolve_workload
    from perfsim.workload.generate import SyntheticDraws, layout_call

    pairs = []
    for name in names:
        w = load_workload(resolve_workload(name))
        root = np.random.SeedSequence(5)
        for i, s in enumerate(w.streams):
            if not hasattr(s, "src_align"):
                continue
            it = iter(SyntheticDraws(s, root, i))
            pairs += [layout_call(next(it), s, target, cpus) for _ in range(calls)]
    return pairs


def measure(calls: int, reps: int) -> dict[str, float]:
    """Best CPU µs per call over the workload calls, in this process's perfsim: ``plan``
    (``plan_mremap``) and ``plan+cols`` (``plan_mremap`` and reading the plan's step
    columns, as the engine's pricing does next; a tree may defer making them)."""
    from perfsim.planner import plan_mremap
    from perfsim.profiles import resolve_target

    target = resolve_target("6.18", "x86_64")
    pairs = _workload_pairs(["ipi_storm", "allocator_realloc"], calls, target)
    best = {"plan": float("inf"), "plan+cols": float("inf")}
    for _ in range(reps):
        c = time.process_time()
        for space, req in pairs:
            plan_mremap(space, req, target)
        best["plan"] = min(best["plan"], time.process_time() - c)
        c = time.process_time()
        for space, req in pairs:
            plan_mremap(space, req, target).steps.cols  # noqa: B018 - made when read
        best["plan+cols"] = min(best["plan+cols"], time.process_time() - c)
    return {k: v / len(pairs) * 1e6 for k, v in best.items()}


# ---------------------------------------------------------------------------- digests
def _random_cases(rng: random.Random, n: int):
    """``(space, request, target)`` for ``n`` seeded random small calls of every kind."""
    from perfsim.mm.build import Population, VmaSpec, build_space
    from perfsim.planner import MoveRequest
    from perfsim.profiles import resolve_target

    kernels = ("6.6", "6.12", "6.15", "6.16", "6.17", "6.18")
    arches = ("x86_64", "x86_64", "arm64-4k", "arm64-16k", "riscv-sv39")
    for _ in range(n):
        t = resolve_target(rng.choice(kernels), rng.choice(arches))
        a = t.arch
        pg, P, U = a.page_size, a.pmd_size, a.pud_size
        pages = rng.choice([1, 2, 7, a.ptrs_per_pte - 1, a.ptrs_per_pte, a.ptrs_per_pte + 3,
                            rng.randint(1, 6 * a.ptrs_per_pte)])
        length = pages * pg
        src = rng.randint(4, 40) * U + rng.choice([0, pg, 5 * pg, P - pg, P // 2]) + rng.randint(0, 3) * P
        backing = rng.choice(["anon", "anon", "anon", "shmem", "file"])
        pop = Population.parse(rng.choice(["full", "full", "none", "0.3", "every:5"]),
                               seed=rng.randint(0, 5))
        thp = rng.random() < 0.3
        specs = [VmaSpec(src, length, backing=backing, populate=pop, thp=thp,
                         file="file0" if backing != "anon" else "src", name="src",
                         folio_size=rng.choice([0, 0, 0, 16 * pg]),
                         uffd="wp" if rng.random() < 0.05 else None,
                         prot=rng.choice(["rw", "rw", "r"]))]
        if rng.random() < 0.3:
            specs.append(VmaSpec(src - pg, pg, prot="r", file="guard-src", name="guard-src"))
        kind = rng.choice(["fixed", "fixed", "fixed", "free", "shrink", "expand", "expand_fixed",
                           "mapped_dst", "dontunmap", "multi", "fail", "stack", "adjacent"])
        gap = rng.choice([0, pg, P, P + 3 * pg, U])
        up = rng.random() < 0.6
        if up:
            dst = src + length + gap + rng.choice([0, pg, P])
        else:
            dst = src - length - gap - rng.choice([pg, P, P + pg])
        if rng.random() < 0.4:
            dst = dst - dst % P + src % P + (P if up else -P)
        if dst < 4 * U:
            dst = src + length + gap + P
        new_len = None
        fixed, maymove, dontunmap, for_stack, fail = True, True, False, False, None
        if kind == "free":
            fixed, dst = False, None
        elif kind == "shrink":
            new_len = max(pg, length - rng.randint(1, pages) * pg) if pages > 1 else pg
            fixed = rng.random() < 0.5
            dst = dst if fixed else None
        elif kind in ("expand", "expand_fixed"):
            new_len = length + rng.randint(1, 2 * a.ptrs_per_pte) * pg
            fixed = kind == "expand_fixed"
            dst = dst if fixed else None
            if rng.random() < 0.5:  # a neighbour after the source: no room to grow in place
                specs.append(VmaSpec(src + length + rng.choice([0, pg]), pg, name="after",
                                     file="after" if rng.random() < 0.5 else "src"))
        elif kind == "mapped_dst":
            specs.append(VmaSpec(dst - dst % pg, rng.randint(1, 2 * a.ptrs_per_pte) * pg,
                                 name="dst", file="dstf", populate=Population.parse("full")))
        elif kind == "dontunmap":
            dontunmap = True
        elif kind == "multi" and t.kernel.version >= (6, 17):
            second = src + length + rng.choice([pg, 3 * pg, P])
            specs.append(VmaSpec(second, rng.randint(1, a.ptrs_per_pte) * pg, name="second",
                                 file="second"))
            length = second + specs[-1].length - src
            dst = src + length + U + rng.choice([0, pg, P])
        elif kind == "fail":
            fail = rng.randint(1, 4)
        elif kind == "stack":
            for_stack = True
            dst = src - rng.randint(1, 3 * a.ptrs_per_pte) * pg
            specs = [VmaSpec(src, length, populate=pop, name="stack")]
        elif kind == "adjacent":  # the destination touches a compatible neighbour (merge)
            specs.append(VmaSpec(dst - pg, pg, name="nb", file="src"))
        try:
            space = build_space(t, specs, cpus=rng.randint(1, 4))
        except Exception:  # noqa: BLE001 - an overlapping random layout: skip it
            continue
        req = MoveRequest(src, length, new_len=new_len, new_addr=dst, fixed=fixed,
                          maymove=maymove, dontunmap=dontunmap, for_stack=for_stack,
                          fail_alloc_at=fail)
        yield space, req, t


def _vma_key(vma) -> tuple:
    """A VMA's fields that differ from their defaults, by name: a field added later, at its
    default, leaves the digest of an older tree's plans as it was."""
    import dataclasses

    return tuple((f.name, getattr(vma, f.name)) for f in dataclasses.fields(vma)
                 if f.default is dataclasses.MISSING or getattr(vma, f.name) != f.default)


def _plan_digest(plan) -> tuple[str, str]:
    """(the hash of every result field of ``plan``, its planner labels)."""
    import numpy as np

    from perfsim.planner import steps as S

    h = hashlib.sha256()
    h.update(repr((plan.errno, plan.result_addr, plan.realigned, plan.progress_bytes,
                   plan.need_rmap_locks, plan.note,
                   [m.to_json() for m in plan.moved], [m.realign for m in plan.moved])).encode())
    st = plan.steps
    h.update(str(len(st)).encode())
    for name in S.ADDR_COLUMNS + S.INT_COLUMNS:
        c = np.asarray(st.col(name))
        h.update(f"{name}:{c.dtype.str}".encode())
        h.update(np.ascontiguousarray(c).tobytes())
    h.update(repr(st.lock_names_per_row()).encode())
    after = plan.after
    h.update(repr(([_vma_key(v) for v in after.vmas], after.cpus, after.lazy_cpus)).encode())
    pt = after.pt
    rows = pt.pmd_mask
    words = pt.masks[np.maximum(rows, 0)]
    words[rows < 0] = 0
    for arr in (pt.pmd_idx, pt.pmd_kind, words, pt.pud_idx, pt.pud_kind):
        h.update(arr.dtype.str.encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    h.update(repr(sorted(pt.pud_tables)).encode())
    return h.hexdigest()[:16], " ".join([plan.planner] + [m.planner for m in plan.moved])


def digests(random_cases: int) -> list[tuple[str, str]]:
    from perfsim.planner import plan_mremap
    from perfsim.planner.options import PlanOptions
    from perfsim.profiles import resolve_target
    from perfsim.workload import workload_names

    cases = []
    for kernel, arch in (("6.18", "x86_64"), ("6.6", "x86_64"), ("6.12", "arm64-4k")):
        t = resolve_target(kernel, arch)
        cases += [(sp, rq, t) for sp, rq in _workload_pairs(workload_names(), 12, t)]
    cases += list(_random_cases(random.Random(13), random_cases))
    out = []
    for i, (space, req, t) in enumerate(cases):
        for opt in (None, PlanOptions("reference")):
            try:
                p = plan_mremap(space, req, t) if opt is None else plan_mremap(space, req, t, opt)
                d = _plan_digest(p)
            except Exception as e:  # noqa: BLE001 - an error is part of the behaviour
                d = (f"error {type(e).__name__}: {e}", "")
            out.append((f"case {i} {'auto' if opt is None else 'reference'} {t.kernel.version} "
                        f"{t.arch.name} {req}", d))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=at_least_one, default=60, help="calls per synthetic stream")
    ap.add_argument("--reps", type=at_least_one, default=5)
    ap.add_argument("--rounds", type=at_least_one, default=2, help="alternations with --against")
    ap.add_argument("--digest", action="store_true", help="digests instead of timings")
    ap.add_argument("--random-cases", type=int, default=1500)
    ap.add_argument("--against", metavar="TREE")
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    ap.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.raw:
        print(repr(digests(a.random_cases) if a.digest else measure(a.calls, a.reps)))
        return
    if a.against:
        require_tree(a.against)
    trees = ([str(Path(a.against).resolve())] if a.against else []) + [str(ROOT)]

    def child(tree: str):
        cmd = [sys.executable, __file__, f"--calls={a.calls}", f"--reps={a.reps}",
               f"--random-cases={a.random_cases}", "--raw", "--tree", tree]
        if a.digest:
            cmd.append("--digest")
        return eval(subprocess.run(cmd, check=True, capture_output=True,  # noqa: S307 - our own repr
                                   text=True).stdout)

    if a.digest:
        got = [child(t) for t in trees]
        mine = got[-1]
        print(f"{len(mine)} plans, digest of all: "
              f"{hashlib.sha256(repr(mine).encode()).hexdigest()[:16]}")
        if a.against:
            old = got[0]
            diff = [(o, m) for o, m in zip(old, mine) if o[0] != m[0] or o[1][0] != m[1][0]]
            other_path = sum(o[1][0] == m[1][0] and o[1][1] != m[1][1]
                             for o, m in zip(old, mine) if o[0] == m[0])
            if len(old) != len(mine):
                print(f"DIFFERENT number of plans: {len(old)} vs {len(mine)}")
            for o, m in diff[:5]:
                print(f"DIFFERS {o[0]}\n  {o[1]}\n  {m[1]}")
            print(f"{len(mine) - len(diff)} of {len(mine)} plans identical to {a.against}"
                  f" ({other_path} of them planned by another path: planner labels differ)")
            if diff or len(old) != len(mine):
                raise SystemExit(1)
        return
    best: dict[str, dict[str, float]] = {}
    for _ in range(a.rounds if a.against else 1):
        for tree in trees:
            got = child(tree)
            mine = best.setdefault(tree, dict(got))
            for k, v in got.items():
                mine[k] = min(mine[k], v)
    for tree in trees:
        print(f"tree {tree}: " + ", ".join(f"{k} {v:.1f} us" for k, v in best[tree].items())
              + " per call (best CPU time)")
    if a.against:
        old, new = best[trees[0]], best[trees[1]]
        print("RATIO start/this tree: " + ", ".join(f"{k} {old[k] / new[k]:.2f}x" for k in new))


if __name__ == "__main__":
    main()
