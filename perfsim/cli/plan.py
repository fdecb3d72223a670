"""``perfsim plan``: what Linux decides for one ``mremap()`` request.

A thin shell: the options are made from the request model (:mod:`perfsim.request_file`,
which lists every key, its default and help once), a request file and the options are
merged (options win), :mod:`perfsim.planner.request` resolves them, the planner answers,
and :mod:`perfsim.planner.render` prints the table, the JSON or the folded trace.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from perfsim.cli import int_range
from perfsim.errors import PerfsimError
from perfsim.planner import plan_mremap
from perfsim.planner.render import (
    compress,
    cost_profile,
    plan_document,
    predict_cost,
    render_table,
    render_trace,
    shape_ids,
    trace_json,
)
from perfsim.planner.request import DST_BASE, MAX_CPUS, SRC_BASE, Resolved, labeller, resolve
from perfsim.profiles import arch_names, kernel_names
from perfsim.request_file import (
    DEFAULTS,
    FORMER_KEYS,
    PlanRequest,
    load_request,
    parse_vma_option,
    validate,
)

__all__ = ["compress", "register", "run", "shape_ids"]

DEFAULT_TRACE_LIMIT = 80

DESCRIPTION = """\
Answer "what does Linux do for this one mremap() call?": whether the move is realigned
to a PMD boundary (and which rule decided), the errno if the kernel refuses it, how many
bytes move_page_tables moved, which ranges went where, the VMAs afterwards, and the
operations performed (PUD/PMD/THP moves, PTEs copied, TLB flushes and IPIs, rmap lock
holds, page-table pages allocated and freed), counted for move_page_tables alone ("move")
and for the whole syscall ("syscall").

The address space is one source VMA [old_addr, old_addr+old_len), faulted in as
--populate says, optionally with a never-touched one-page VMA right below the source or the
destination (which blocks realignment, docs/kernel-rules.md E3) -- or exactly the VMAs given
with --vma (or [[vma]] tables in --file). The call is mremap(old_addr, old_len, new_len,
flags, new_addr) with MREMAP_MAYMOVE|MREMAP_FIXED unless --no-maymove, --no-fixed,
--dontunmap or --for-stack (exec's relocate_vma_down) say otherwise. --src, --len and --dst
are short spellings of --old-addr, --old-len and --new-addr.
"""

EPILOG = f"""\
addresses and sizes:
  Sizes are bytes with binary suffixes, joined by + or -: 4K, 2M, 1G+4K, 0x200000.
  A plain number is an address: --old-addr 0x2801000 means 0x2801000. To count from the
  default bases, name them: A = {SRC_BASE:#x} (source), B = {DST_BASE:#x}
  (destination), e.g. --old-addr A+2M+4K is {SRC_BASE + (2 << 20) + 4096:#x} and
  --new-addr B+6M+8K is {DST_BASE + (6 << 20) + 8192:#x}. A and B lie in one 512 GiB PGD
  slot, as in a real process. (On riscv-sv39, whose user range ends lower, A and B are
  TASK_SIZE/4 and /2.)
  Every range must lie inside the arch's user address range [0, TASK_SIZE).

--vma START:SIZE[:key=value,...]   (repeat for each VMA; [[vma]] tables in a file)
  keys: backing=anon|shmem|file|hugetlb, prot=rw|r|none|..., populate=HOW, thp=true,
  folio_size=16K..1M, pgoff=N, file=NAME (VMAs naming the same file or anon family share
  it), uffd=missing|wp, touched=false (mapped, never faulted in), shared=false (MAP_PRIVATE
  file/shmem), written_back=true (a shared file's pages written back since: clean PTEs),
  dirty=true (a VMA without write permission written before mprotect: dirty PTEs),
  shmem_huge=true (shmem on a superblock allowing huge pages: a range the kernel places
  is aligned), hugepage_size=SIZE, noreserve=true (MAP_NORESERVE), account=true|false
  (VM_ACCOUNT; default: what mmap gives): the two flags the merge test compares besides
  these.
  e.g. --vma A:64M:populate=every:512 --vma A-4K:4K:prot=r,touched=false

populate:
  full, none, a fraction such as 0.25 (seeded by --seed), every:K (pages 0, K, 2K, ...
  counted from the start of the VMA, as a loop touches them), first:SIZE (a prefix),
  aligned:K (pages whose address is a multiple of K pages).

results vs. errors, exit status:
  0  a plan was printed -- including a call the kernel refuses (unaligned address, len 0,
     overlapping ranges, ...): the errno is printed (and is "errno" in --json).
  2  bad input to perfsim itself (unknown arch/kernel, unreadable file, unparsable or
     negative size, range outside the user address space, --cpus outside 1..{MAX_CPUS},
     bad request file): one line "perfsim: error: ...".
  130 interrupted.

request files:
  --file REQ.toml holds the same settings as the options, keys spelled like them (and
  [[vma]] tables): old_addr, old_len, new_len, new_addr, the syscall's own argument names
  (the former keys src, len and dst are refused). Options given on the command line win.
  See examples/plan/*.toml.

examples:
  perfsim plan --old-len 1G                                         # E1: one PUD move
  perfsim plan --old-len 1G --old-addr A+2M+4K --new-addr B+6M+4K   # E2: realigned
  perfsim plan --len 1G --src A+2M+4K --dst B+6M+4K                 # E2, short spellings
  perfsim plan --len 1G --src A+2M+4K --dst B+6M+4K --guard-below-src   # E3
  perfsim plan --len 1G --src A+2M+4K --dst B+6M+8K --trace     # E4: 1025 move_ptes
  perfsim plan --file examples/plan/e2.toml --kernel 6.6 --json
  perfsim plan --len 12K --src 0x7fffffffc000 --dst 0x7ffd4c59e000 --for-stack   # E7
  perfsim plan --file examples/plan/multi_vma.toml             # remap_move over VMAs

archs: {", ".join(arch_names())}
kernels: {", ".join(kernel_names())}
  (or a release as uname -r prints it, e.g. 6.8.0-45-generic: its line's profile)
"""

_GROUPS = {"request": "the request", "space": "the address space", "target": "the target"}
_INT_KEYS = ("cpus", "seed", "fail_alloc_at")


def _bounds(field) -> tuple[int, int | None]:
    """The ``ge``/``le`` bounds of an integer key of :class:`PlanRequest`, for its option:
    the option and the file key are held to the same range (``--seed -1`` was a numpy
    traceback)."""
    lo, hi = None, None
    for m in field.metadata:
        lo = getattr(m, "ge", lo)
        hi = getattr(m, "le", hi)
    return (0 if lo is None else lo), hi


def _add_option(group, name: str, field) -> None:
    extra = field.json_schema_extra or {}
    flags = ["--" + name.replace("_", "-")] + [f"--{k}" for k, v in FORMER_KEYS.items()
                                                if v == name]  # --src, --len, --dst
    default = field.default
    shown = "" if default is None or isinstance(default, bool) or name in ("vma", "dontneed") \
        else f" ({default})"
    kw: dict[str, Any] = {"dest": name, "default": None, "help": f"{field.description}{shown}"}
    if extra.get("metavar"):
        kw["metavar"] = extra["metavar"]
    if default is True or default is False and name != "thp":
        kw["action"] = argparse.BooleanOptionalAction
    elif name in ("vma", "dontneed"):
        kw["action"] = "append"
    elif name == "thp":
        kw["choices"] = ("on", "off")
    elif name == "backing":
        kw["choices"] = ("anon", "shmem", "file", "hugetlb")
    elif name == "platform":
        kw["choices"] = ("bare-metal", "kvm-guest")
    elif name in _INT_KEYS:
        kw["type"] = int_range(*_bounds(field))
    group.add_argument(*flags, **kw)


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``plan`` subcommand, its options made from :class:`PlanRequest`."""
    p = subparsers.add_parser(
        "plan", help="what the kernel decides for one mremap() request (counts, errno, trace)",
        description=DESCRIPTION, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {k: p.add_argument_group(title) for k, title in _GROUPS.items()}
    groups["request"].add_argument("--file", metavar="REQUEST.toml",
                                   help="read the request from a TOML file; options given "
                                        "here override it")
    for name, field in PlanRequest.model_fields.items():
        extra = field.json_schema_extra or {}
        if extra.get("cli", True):
            _add_option(groups[extra.get("group", "request")], name, field)
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


def merge_settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, str]]:
    """Defaults ← request file ← explicit options. Returns the values and where each came
    from (``"default"``, the file path, or ``"cli"``)."""
    values = dict(DEFAULTS)
    origin = {k: "default" for k in values}
    if getattr(args, "file", None):
        for key, value in load_request(args.file).given().items():
            values[key], origin[key] = value, args.file
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is None:
            continue
        if key == "thp":
            value = value == "on"
        if key == "vma":
            tables = [parse_vma_option(text, i) for i, text in enumerate(value, 1)]
            value = validate({"vma": tables}, "--vma").given()["vma"]
        values[key], origin[key] = value, "cli"
    return values, origin


def resolve_args(args: argparse.Namespace) -> Resolved:
    """The request the options (and the file) describe."""
    values, origin = merge_settings(args)
    return resolve(values, origin, labeller(origin))


def run(args: argparse.Namespace) -> int:
    """Plan one request and print it. A kernel errno is a result: exit status 0."""
    if args.trace_limit < 0:
        raise PerfsimError(f"--trace-limit: must be >= 0, got {args.trace_limit}")
    res = resolve_args(args)
    profile = None
    if res.settings["cost_profile"]:
        profile = cost_profile(str(res.settings["cost_profile"]), arch=res.target.arch.name,
                               force=bool(res.settings["force_cost_profile"]))
    plan = plan_mremap(res.space, res.request, res.target)
    cost = None if profile is None else predict_cost(
        plan, profile, res.settings["cpus"], target=res.target,
        written_before_bytes=res.settings["written_before"])
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
