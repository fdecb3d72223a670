"""``perfsim plan``: what Linux decides for one ``mremap()`` request.

The request comes from options or from a TOML file (:mod:`perfsim.request_file`); options
given on the command line override the file. The address space is one source VMA built by
:func:`perfsim.mm.build.single_move_space`, and the answer is
:func:`perfsim.planner.plan_mremap`'s :class:`~perfsim.planner.MovePlan`, shown as a table,
as JSON (``--json``) and/or as a compressed step trace (``--trace``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from perfsim.errors import PerfsimError
from perfsim.mm.build import Population, single_move_space
from perfsim.mm.space import AddressSpace
from perfsim.mm.vma import BACKINGS
from perfsim.planner import MovePlan, MoveRequest, plan_mremap
from perfsim.planner import steps as S
from perfsim.planner.result import COUNTER_FIELDS
from perfsim.profiles import Target, arch_names, kernel_names, resolve_target
from perfsim.units import fmt_size, parse_size

SRC_BASE = 0x7F0000000000
"""Default source address, and the base that small ``--src`` values are offsets from."""
DST_BASE = 0x7F4000000000
"""Default destination address, and the base that small ``--dst`` values are offsets from.
SRC_BASE and DST_BASE are both 1 GiB aligned and lie in the same 512 GiB PGD slot (E1)."""
OFFSET_LIMIT = 1 << 32
"""An ``--src``/``--dst`` value below this is an offset from the base, else an address."""

DEFAULTS: dict[str, Any] = {
    "arch": "x86_64", "kernel": "6.18", "backing": "anon", "thp": False, "populate": "full",
    "seed": 0, "guard_below_src": False, "guard_below_dst": False, "for_stack": False,
    "cpus": 1, "fixed": True, "dontunmap": False, "new_len": None, "fail_alloc_at": None,
    "hugepage_size": None, "cost_profile": None, "description": None,
}
DEFAULT_TRACE_LIMIT = 80
MAX_PERIOD = 4
"""Longest repeating block of step shapes ``--trace`` folds into one "× N" group."""

DESCRIPTION = """\
Answer "what does Linux do for this one mremap() call?": whether the move is realigned
to a PMD boundary, the errno if the kernel refuses it, how many bytes move_page_tables
moved, and the operations it performs (PUD/PMD/THP moves, PTEs copied, TLB flushes and
IPIs, rmap lock holds, page-table pages allocated and freed), counted for
move_page_tables alone ("move") and for the whole syscall ("syscall").

The address space holds one source VMA [src, src+len), faulted in as --populate says,
optionally with a one-page VMA right below the source or the destination (which blocks
realignment, kernel-model.md E3). The call is
mremap(src, len, new-len, MREMAP_MAYMOVE|MREMAP_FIXED, dst) unless --no-fixed,
--dontunmap or --for-stack (exec's relocate_vma_down) say otherwise.
"""

EPILOG = f"""\
addresses and sizes:
  Sizes are bytes with binary suffixes, joined by + or -: 4K, 2M, 1G+4K, 0x200000.
  --src/--dst values below 4G (2**32) are OFFSETS from the default bases
  src {SRC_BASE:#x} and dst {DST_BASE:#x}; larger values are absolute addresses.
  So "--src 2M+4K" is {SRC_BASE + (2 << 20) + 4096:#x}. (On an arch whose user range
  ends below the dst base, riscv-sv39, the bases are TASK_SIZE/4 and TASK_SIZE/2.)
  Every range must lie inside the arch's user address range [0, TASK_SIZE).

results vs. errors:
  A request the kernel refuses (unaligned address, len 0, overlapping ranges, ...) is a
  result: the errno is printed (and is "errno" in --json) and the exit status is 0.
  Bad input to perfsim itself (unknown arch/kernel, unparsable or negative size, range
  outside the user address space, bad --populate/--cpus, bad request file) prints one
  line "perfsim: error: ..." and exits with status 2.

request files:
  --file REQ.toml holds the same settings as the options, keys spelled like them
  (len, src, dst, new_len, arch, kernel, backing, thp, populate, seed, guard_below_src,
  guard_below_dst, for_stack, cpus, fixed, dontunmap, fail_alloc_at, hugepage_size,
  cost_profile, description). Options given on the command line win.
  See examples/plan/*.toml.

examples:
  perfsim plan --len 1G                                  # E1: one PUD move
  perfsim plan --len 1G --src 2M+4K --dst 6M+4K          # E2: realigned, 512 PMD moves
  perfsim plan --len 1G --src 2M+4K --dst 6M+4K --guard-below-src   # E3
  perfsim plan --len 1G --src 2M+4K --dst 6M+8K --trace  # E4: 1025 move_ptes calls
  perfsim plan --file examples/plan/e2.toml --kernel 6.6 --json
  perfsim plan --len 12K --src 0x7fffffffc000 --dst 0x7ffd4c59e000 --for-stack   # E7

archs: {", ".join(arch_names())}
kernels: {", ".join(kernel_names())}
"""


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand to the top-level parser's subparsers."""
    p = subparsers.add_parser(
        "plan", help="what the kernel decides for one mremap() request (counts, errno, trace)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    BOOL = argparse.BooleanOptionalAction
    r = p.add_argument_group("the request")
    r.add_argument("--file", metavar="REQUEST.toml",
                   help="read the request from a TOML file; options given here override it")
    r.add_argument("--len", metavar="SIZE", help="old_len: bytes to move (required), e.g. 1G")
    r.add_argument("--src", metavar="ADDR",
                   help=f"old_addr: address, or offset below 4G from {SRC_BASE:#x} (default)")
    r.add_argument("--dst", metavar="ADDR",
                   help=f"new_addr: address, or offset below 4G from {DST_BASE:#x} (default; "
                        "with --no-fixed and no --dst the kernel picks the place)")
    r.add_argument("--new-len", metavar="SIZE", help="new_len (default: --len)")
    r.add_argument("--fixed", action=BOOL, default=None,
                   help="pass MREMAP_FIXED (default); --no-fixed makes --dst a mere hint")
    r.add_argument("--dontunmap", action=BOOL, default=None, help="pass MREMAP_DONTUNMAP")
    r.add_argument("--for-stack", action=BOOL, default=None,
                   help="plan exec's relocate_vma_down instead of mremap(): the whole source "
                        "VMA moves down, so --dst must lie below --src")
    r.add_argument("--fail-alloc-at", metavar="K", type=int, default=None,
                   help="fail the K-th page-table allocation (1-based) to exercise the "
                        "partial move and its revert")

    m = p.add_argument_group("the address space")
    m.add_argument("--backing", choices=BACKINGS, default=None, help="source VMA kind (anon)")
    m.add_argument("--thp", choices=("on", "off"), default=None,
                   help="source mapped with PMD-size THPs where aligned (off)")
    m.add_argument("--hugepage-size", metavar="SIZE", default=None,
                   help="hugetlb page size for --backing hugetlb (default: the PMD size)")
    m.add_argument("--populate", metavar="HOW", default=None,
                   help="full (default), none, a fraction in (0,1) of pages chosen with --seed, "
                        "or every:K (every K-th page)")
    m.add_argument("--seed", type=int, default=None, help="seed for --populate FRACTION (0)")
    m.add_argument("--guard-below-src", action=BOOL, default=None,
                   help="map a one-page VMA right below the source (blocks realignment, E3)")
    m.add_argument("--guard-below-dst", action=BOOL, default=None,
                   help="map a one-page VMA right below the destination")
    m.add_argument("--cpus", metavar="N", type=int, default=None,
                   help="the mm's threads run on N CPUs: each flush IPIs the other N-1 (1)")

    t = p.add_argument_group("the target")
    t.add_argument("--arch", metavar="NAME", default=None,
                   help=f"architecture name or TOML path (x86_64): {', '.join(arch_names())}")
    t.add_argument("--kernel", metavar="NAME", default=None,
                   help=f"kernel profile name or TOML path (6.18): {', '.join(kernel_names())}")
    t.add_argument("--cost-profile", metavar="NAME|PATH", default=None,
                   help="also predict the call's duration with this cost profile "
                        "(needs perfsim.cost)")

    o = p.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print MovePlan.to_json() plus 'request' and 'target' as JSON")
    o.add_argument("--trace", action="store_true",
                   help="print the step list; runs of steps of identical shape fold into "
                        "'×N' groups")
    o.add_argument("--trace-limit", metavar="N", type=int, default=DEFAULT_TRACE_LIMIT,
                   help=f"print at most N trace lines, 0 for all ({DEFAULT_TRACE_LIMIT})")
    p.set_defaults(func=run)
    return p


# --------------------------------------------------------------------------- resolution

@dataclass
class Resolved:
    """A request resolved into what the planner takes, plus what the JSON reports."""

    target: Target
    space: AddressSpace
    request: MoveRequest
    settings: dict[str, Any]
    origin: dict[str, str] = field(default_factory=dict)


def _label(key: str, origin: dict[str, str]) -> str:
    src = origin.get(key)
    if src is None or src == "cli":
        return "--" + key.replace("_", "-")
    return f"{src}: {key}"


def merge_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Defaults ← request file ← explicit options. Returns the values and where each came
    from (``"default"``, the file path, or ``"cli"``)."""
    from perfsim.request_file import load_request

    values = dict(DEFAULTS)
    values["len"] = values["src"] = values["dst"] = None
    origin = {k: "default" for k in values}
    if getattr(args, "file", None):
        for key, value in load_request(args.file).given().items():
            values[key] = value
            origin[key] = args.file
    for key in ("len", "src", "dst", "new_len", "arch", "kernel", "backing", "thp",
                "hugepage_size", "populate", "seed", "guard_below_src", "guard_below_dst",
                "for_stack", "cpus", "fixed", "dontunmap", "fail_alloc_at", "cost_profile"):
        value = getattr(args, key, None)
        if value is not None:
            if key == "thp":
                value = value == "on"
            values[key] = value
            origin[key] = "cli"
    return values, origin


def default_bases(arch) -> tuple[int, int]:
    """The source and destination bases: SRC_BASE and DST_BASE, unless the arch's user
    range ends too low for them (riscv-sv39): then TASK_SIZE/4 and TASK_SIZE/2, aligned
    down to the PUD size."""
    top = arch.user_va_top
    if DST_BASE + OFFSET_LIMIT <= top:
        return SRC_BASE, DST_BASE
    return (top // 4) // arch.pud_size * arch.pud_size, (top // 2) // arch.pud_size * arch.pud_size


def _address(value: Any, base: int, label: str) -> int:
    n = parse_size(value, what=label)
    return base + n if n < OFFSET_LIMIT else n


def resolve(args: argparse.Namespace) -> Resolved:
    """Turn options (and a request file) into a target, an address space and a request.
    Every problem with the input is a :class:`PerfsimError`; requests the kernel would
    refuse are left for the planner to answer with an errno."""
    v, origin = merge_settings(args)

    def lab(key: str) -> str:
        return _label(key, origin)

    target = resolve_target(kernel=str(v["kernel"]), arch=str(v["arch"]))
    arch = target.arch
    page, top = arch.page_size, arch.user_va_top

    if v["len"] is None:
        raise PerfsimError("--len is required (or 'len' in the request file), e.g. --len 1G")
    length = parse_size(v["len"], what=lab("len"))
    new_len = None if v["new_len"] is None else parse_size(v["new_len"], what=lab("new_len"))
    src_base, dst_base = default_bases(arch)
    src = src_base if v["src"] is None else _address(v["src"], src_base, lab("src"))
    if v["dst"] is None:
        dst = None if not v["fixed"] else dst_base
    else:
        dst = _address(v["dst"], dst_base, lab("dst"))
    hugepage_size = 0
    if v["hugepage_size"] is not None:
        hugepage_size = parse_size(v["hugepage_size"], what=lab("hugepage_size"))
        if hugepage_size not in (arch.pmd_size, arch.pud_size):
            raise PerfsimError(
                f"{lab('hugepage_size')}: {fmt_size(hugepage_size)} is not a huge page size of "
                f"{arch.name}; allowed: {fmt_size(arch.pmd_size)} or {fmt_size(arch.pud_size)}")
        if v["backing"] != "hugetlb":
            raise PerfsimError(f"{lab('hugepage_size')} needs --backing hugetlb")

    def align(n: int, to: int) -> int:
        return -(-n // to) * to

    old_span = align(length, page)
    new_span = align(length if new_len is None else new_len, page)
    _check_range(lab("src"), src, old_span, lab("len"), top, arch.name)
    if dst is not None:
        _check_range(lab("dst"), dst, new_span, lab("new_len") if new_len is not None
                     else lab("len"), top, arch.name)

    cpus = v["cpus"]
    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise PerfsimError(f"{lab('cpus')}: must be an integer >= 1, got {cpus!r}")
    fail_at = v["fail_alloc_at"]
    if fail_at is not None and fail_at < 1:
        raise PerfsimError(f"{lab('fail_alloc_at')}: must be >= 1 (1 = the first allocation), "
                           f"got {fail_at}")
    try:
        population = Population.parse(str(v["populate"]), seed=int(v["seed"]))
    except PerfsimError as exc:
        raise PerfsimError(str(exc).replace("--populate", lab("populate"), 1)) from None

    if v["for_stack"]:
        clash = [f for f in ("new_len", "dontunmap") if v[f]] + ([] if v["fixed"] else ["fixed"])
        if clash:
            names = ", ".join("--no-fixed" if c == "fixed" else lab(c) for c in clash)
            raise PerfsimError(f"--for-stack plans exec's relocate_vma_down, which takes no "
                               f"{names}")
        if dst is None or dst >= src:
            raise PerfsimError(
                f"--for-stack: the stack moves down, so --dst must lie below --src "
                f"(src {src:#x}, dst {'unset' if dst is None else hex(dst)})")

    # The source VMA: the page-aligned range [src, src+len) (one page for len 0, so that the
    # kernel's own EINVAL for a zero length is what the user sees), huge-page aligned for
    # hugetlb. An unaligned src gets an aligned VMA; the kernel answers EINVAL.
    vma_start = src - src % page
    vma_len = max(align(src + length, page) - vma_start, page)
    if v["backing"] == "hugetlb":
        h = hugepage_size or arch.pmd_size
        vma_len = max(align(vma_len, h), h)
    guard_dst = None
    if v["guard_below_dst"]:
        if dst is None:
            raise PerfsimError("--guard-below-dst needs a destination (--dst, or drop --no-fixed)")
        guard_dst = dst - dst % page
        if guard_dst < page:
            raise PerfsimError("--guard-below-dst: no room below the destination")
    if vma_start + vma_len > top:
        raise PerfsimError(f"{lab('src')}: the source VMA would end beyond TASK_SIZE {top:#x}")
    space = single_move_space(
        target, src=vma_start, length=vma_len, backing=v["backing"], thp=bool(v["thp"]),
        populate=population, guard_below_src=bool(v["guard_below_src"]),
        guard_below_dst=guard_dst, cpus=cpus, hugepage_size=hugepage_size)
    request = MoveRequest(
        old_addr=src, old_len=length, new_len=new_len, new_addr=dst, maymove=True,
        fixed=bool(v["fixed"]) and not v["for_stack"], dontunmap=bool(v["dontunmap"]),
        for_stack=bool(v["for_stack"]), fail_alloc_at=fail_at)
    settings = dict(v, len=length, new_len=new_len, src=src, dst=dst, cpus=cpus,
                    hugepage_size=hugepage_size or None, populate=str(v["populate"]))
    return Resolved(target, space, request, settings, origin)


def _check_range(label: str, addr: int, span: int, len_label: str, top: int, arch: str) -> None:
    if addr >= top:
        raise PerfsimError(f"{label}: {addr:#x} is outside the user address range "
                           f"[0, {top:#x}) of {arch}")
    if addr + span > top:
        raise PerfsimError(f"{label} + {len_label}: [{addr:#x}, {addr + span:#x}) ends beyond "
                           f"the user address range [0, {top:#x}) of {arch}")


# --------------------------------------------------------------------------- cost model

def predict_cost(plan: MovePlan, name: str, cpus: int) -> dict[str, Any]:
    """Ask :mod:`perfsim.cost` (when it is installed) for the call's predicted duration."""
    try:
        cost = importlib.import_module("perfsim.cost")
    except ImportError as exc:
        raise PerfsimError(f"cost model not available ({exc})") from None
    load = getattr(cost, "load_cost_profile", None)
    predict = getattr(cost, "predict", None)
    if not callable(load) or not callable(predict):
        raise PerfsimError("cost model not available: perfsim.cost provides no "
                           "load_cost_profile/predict yet")
    profile = load(name)
    pred = predict(plan, profile, cpus=cpus)
    out: dict[str, Any] = {
        "predicted_ns": _jsonable(pred.predicted_ns),
        "cost_ns": {str(k): _jsonable(x) for k, x in dict(pred.cost_ns).items()},
        "cost_profile": {"name": getattr(profile, "name", str(name))},
    }
    digest = getattr(profile, "digest", None)
    if digest is not None:
        out["cost_profile"]["digest"] = digest() if callable(digest) else digest
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x


# --------------------------------------------------------------------------- documents

def flags_of(req: MoveRequest) -> list[str]:
    if req.for_stack:
        return ["relocate_vma_down"]
    flags = ["MAYMOVE"] if req.maymove else []
    if req.fixed:
        flags.append("FIXED")
    if req.dontunmap:
        flags.append("DONTUNMAP")
    return flags


def request_json(res: Resolved, file: str | None) -> dict[str, Any]:
    s, req = res.settings, res.request
    return {
        "src": req.old_addr, "dst": req.new_addr, "len": req.old_len, "new_len": req.new_len,
        "flags": flags_of(req), "backing": s["backing"], "thp": bool(s["thp"]),
        "hugepage_size": s["hugepage_size"], "populate": s["populate"], "seed": s["seed"],
        "guard_below_src": bool(s["guard_below_src"]),
        "guard_below_dst": bool(s["guard_below_dst"]), "cpus": s["cpus"],
        "fail_alloc_at": req.fail_alloc_at, "for_stack": req.for_stack,
        "description": s["description"], "file": file,
    }


def target_json(target: Target) -> dict[str, Any]:
    return {"arch": target.arch.name, "kernel": target.kernel.name,
            "profile_digest": target.digest}


def plan_document(plan: MovePlan, res: Resolved, file: str | None,
                  cost: dict[str, Any] | None = None) -> dict[str, Any]:
    doc = plan.to_json()
    doc["request"] = request_json(res, file)
    doc["target"] = target_json(res.target)
    if cost:
        doc.update(cost)
    return doc


def _call_text(req: MoveRequest) -> str:
    if req.for_stack:
        return f"relocate_vma_down(stack at {req.old_addr:#x}, new start {req.new_addr:#x})"
    new_len = req.old_len if req.new_len is None else req.new_len
    dst = "NULL" if req.new_addr is None else f"{req.new_addr:#x}"
    return (f"mremap({req.old_addr:#x}, {fmt_size(req.old_len)}, {fmt_size(new_len)}, "
            f"{'|'.join(flags_of(req)) or '0'}, {dst})")


def render_table(plan: MovePlan, res: Resolved, cost: dict[str, Any] | None = None) -> str:
    s, t = res.settings, res.target
    space = []
    space.append(f"{s['backing']}")
    space.append(f"THP {'on' if s['thp'] else 'off'}")
    space.append(f"populate {s['populate']}")
    if s["guard_below_src"]:
        space.append("guard below src")
    if s["guard_below_dst"]:
        space.append("guard below dst")
    space.append(f"{s['cpus']} CPU{'s' if s['cpus'] != 1 else ''}")
    if res.request.fail_alloc_at:
        space.append(f"allocation {res.request.fail_alloc_at} fails")
    if plan.errno:
        result = f"errno {plan.errno}" + (f" ({plan.note})" if plan.note else "")
    else:
        result = "ok"
        if plan.result_addr is not None:
            result += f", returns {plan.result_addr:#x}"
        if plan.note:
            result += f" ({plan.note})"
    lines = [
        f"target      {t.arch.name}, kernel {t.kernel.name} (profile {t.digest})",
        f"request     {_call_text(res.request)}",
        f"source      {', '.join(space)}",
    ]
    if s["description"]:
        lines.append(f"about       {s['description']}")
    lines += [
        f"result      {result}",
        f"realigned   {'yes' if plan.realigned else 'no'}",
        f"progress    {fmt_size(plan.progress_bytes)} ({plan.progress_bytes} bytes)",
        f"rmap locks  {'needed (need_rmap_locks)' if plan.need_rmap_locks else 'not needed'}"
        f" · {len(plan.steps)} steps · {plan.planner} planner",
    ]
    if cost:
        ns = cost["predicted_ns"]
        top = sorted(cost["cost_ns"].items(), key=lambda kv: -float(kv[1]))[:3]
        parts = ", ".join(f"{k} {_fmt_ns(x)}" for k, x in top if float(x) > 0)
        lines.append(f"predicted   {_fmt_ns(ns)} (cost profile {cost['cost_profile']['name']})"
                     + (f"; largest: {parts}" if parts else ""))
    lines.append("")
    mv, sc = plan.move.as_dict(), plan.syscall.as_dict()
    rows = [(name, mv[name], sc[name]) for name in COUNTER_FIELDS]
    for lvl in ("p4d", "pud", "pmd", "pte"):
        rows.append((f"tables_allocated.{lvl}", mv["tables_allocated"][lvl],
                     sc["tables_allocated"][lvl]))
    width = max(len(r[0]) for r in rows)
    cw = max(9, *(len(str(r[1])) for r in rows), *(len(str(r[2])) for r in rows))
    lines.append(f"{'counter':<{width}}  {'move':>{cw}}  {'syscall':>{cw}}")
    lines.append(f"{'-' * width}  {'-' * cw}  {'-' * cw}")
    for name, a, b in rows:
        lines.append(f"{name:<{width}}  {a:>{cw}}  {b:>{cw}}")
    lines.append("")
    lines.append("move = move_page_tables alone; syscall = the whole call "
                 "(what tlb:tlb_flush sees)")
    return "\n".join(lines)


def _fmt_ns(ns: float) -> str:
    ns = float(ns)
    if ns >= 1e6:
        return f"{ns / 1e6:.3g} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3g} µs"
    return f"{ns:.3g} ns"


# --------------------------------------------------------------------------- trace

_SHAPE_COLUMNS = ("phase", "kind", "length", "ptes", "slots", "batches", "alloc_p4d",
                  "alloc_pud", "alloc_pmd", "alloc_pte", "freed", "flushes", "flush_full",
                  "flush_pages", "ipis", "rmap", "ptl", "notifier")


@dataclass(frozen=True)
class TraceGroup:
    """``period`` consecutive step rows starting at ``start``, repeated ``repeat`` times."""

    start: int
    period: int
    repeat: int

    @property
    def rows(self) -> int:
        return self.period * self.repeat


def shape_ids(steps: S.Steps) -> np.ndarray:
    """One integer per row; equal ids mean equal shape (everything but the addresses)."""
    if len(steps) == 0:
        return np.zeros(0, dtype=np.int64)
    import pandas as pd

    key = np.zeros(len(steps), dtype=np.int64)
    for col in [steps.col(c) for c in _SHAPE_COLUMNS] + [steps.lock_set]:
        codes, uniques = pd.factorize(col)
        if len(uniques) > 1:
            # Mixed-radix combination, re-factorised so it never overflows.
            key, _ = pd.factorize(key * len(uniques) + codes)
    return np.asarray(key, dtype=np.int64)


def _run_lengths(eq: np.ndarray) -> np.ndarray:
    """``r[i]`` = how many consecutive True values start at ``eq[i]``."""
    n = len(eq)
    idx = np.arange(n)
    false_at = np.where(eq, n, idx)
    next_false = np.minimum.accumulate(false_at[::-1])[::-1]
    return next_false - idx


def compress(steps: S.Steps, max_groups: int | None = None,
             max_period: int = MAX_PERIOD) -> list[TraceGroup]:
    """Fold the step table into groups: at each row, the block of 1..``max_period`` rows
    whose back-to-back repetition covers the most rows (shortest block on a tie)."""
    ids = shape_ids(steps)
    n = len(ids)
    runs = {p: _run_lengths(ids[p:] == ids[:-p]) for p in range(1, max_period + 1) if n > p}
    groups: list[TraceGroup] = []
    i = 0
    while i < n and (max_groups is None or len(groups) < max_groups):
        best = TraceGroup(i, 1, 1)
        for p, r in runs.items():
            if i >= len(r):
                continue
            k = int(r[i]) // p + 1
            if k >= 2 and k * p > best.rows:
                best = TraceGroup(i, p, k)
        groups.append(best)
        i += best.rows
    return groups


def _step_fields(steps: S.Steps, j: int) -> dict[str, Any]:
    c = steps.cols
    allocs = [lvl for lvl in ("p4d", "pud", "pmd", "pte") for _ in range(int(c[f"alloc_{lvl}"][j]))]
    if int(c["flushes"][j]):
        flush = "full" if int(c["flush_full"][j]) else f"pages={int(c['flush_pages'][j])}"
    else:
        flush = None
    return {
        "phase": S.PHASE_NAMES[int(c["phase"][j])],
        "kind": S.KIND_NAMES[int(c["kind"][j])],
        "old_addr": int(c["old_addr"][j]), "new_addr": int(c["new_addr"][j]),
        "length": int(c["length"][j]), "ptes": int(c["ptes"][j]),
        "allocs": allocs, "freed": int(c["freed"][j]), "flush": flush,
        "ipis": int(c["ipis"][j]), "rmap_locks": list(steps.lock_sets[int(steps.lock_set[j])]),
    }


def trace_json(steps: S.Steps, limit: int) -> dict[str, Any]:
    groups = compress(steps, max_groups=limit or None)
    covered = sum(g.rows for g in groups)
    return {
        "rows": len(steps),
        "truncated": covered < len(steps),
        "groups": [{"first_row": g.start + 1, "repeat": g.repeat,
                    "steps": [_step_fields(steps, g.start + q) for q in range(g.period)]}
                   for g in groups],
    }


def render_trace(steps: S.Steps, limit: int) -> str:
    """The step list, one line per step, repeated blocks folded into "×N" groups; at most
    ``limit`` lines of steps (0: no limit)."""
    head = (f"{'#':>14}  {'phase':<9} {'kind':<24} {'old_addr':>14} {'new_addr':>14} "
            f"{'length':>10} {'ptes':>6}  {'alloc':<8} {'freed':>5}  {'flush':<10} "
            f"{'ipis':>4}  rmap")
    out = [f"trace: {len(steps)} steps", head]
    printed = 0
    groups = compress(steps, max_groups=limit or None)
    covered = 0
    for g in groups:
        if limit and printed >= limit:
            break
        covered += g.rows
        first, last = g.start + 1, g.start + g.rows
        if g.repeat == 1:
            out.append(_trace_line(steps, g.start, f"{first}"))
            printed += 1
        elif g.period == 1:
            out.append(_trace_line(steps, g.start, f"{first}-{last} ×{g.repeat}"))
            printed += 1
        else:
            out.append(f"{f'{first}-{last}':>14}  ×{g.repeat} of the {g.period} steps:")
            for q in range(g.period):
                out.append(_trace_line(steps, g.start + q, f"{g.start + q + 1}", indent=True))
                printed += 1
    if covered < len(steps):
        out.append(f"... {len(steps) - covered} more steps not shown "
                   f"(--trace-limit {limit}; 0 shows all)")
    return "\n".join(out)


def _trace_line(steps: S.Steps, j: int, label: str, indent: bool = False) -> str:
    f = _step_fields(steps, j)
    alloc = ",".join(f["allocs"]) or "-"
    rmap = ",".join(f["rmap_locks"]) or "-"
    label = f"  {label:>12}" if indent else f"{label:>14}"
    new = f"{f['new_addr']:#x}" if f["new_addr"] or f["phase"] == "move" else "-"
    return (f"{label}  {f['phase']:<9} {f['kind']:<24} {f['old_addr']:>#14x} "
            f"{new:>14} {fmt_size(f['length']):>10} {f['ptes']:>6}  {alloc:<8} "
            f"{f['freed'] or '-':>5}  {f['flush'] or '-':<10} {f['ipis'] or '-':>4}  {rmap}")


# --------------------------------------------------------------------------- entry

def run(args: argparse.Namespace) -> int:
    """Plan one request and print it. A kernel errno is a result: exit status 0."""
    if args.trace_limit < 0:
        raise PerfsimError(f"--trace-limit: must be >= 0, got {args.trace_limit}")
    res = resolve(args)
    plan = plan_mremap(res.space, res.request, res.target)
    cost = None
    if res.settings.get("cost_profile"):
        cost = predict_cost(plan, str(res.settings["cost_profile"]), res.settings["cpus"])
    file = getattr(args, "file", None)
    out = sys.stdout
    if args.json:
        doc = plan_document(plan, res, file, cost)
        if args.trace:
            doc["trace"] = trace_json(plan.steps, args.trace_limit)
        json.dump(doc, out, indent=2)
        out.write("\n")
        return 0
    out.write(render_table(plan, res, cost) + "\n")
    if args.trace:
        out.write("\n" + render_trace(plan.steps, args.trace_limit) + "\n")
    return 0
