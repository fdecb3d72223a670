"""``perfsim groundtruth``: measure real kernels' mremap() flushes and hold the profiles to them.

Boots a Debian kernel image (or a given vmlinuz) under QEMU's TCG with a busybox initramfs
running the C probe (probes/groundtruth/probe.c), or runs the probe on this machine's
kernel (``--native``); writes one JSON record per call and compares each with
``plan_mremap`` under the kernel's profile. See docs/groundtruth.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perfsim.cli import output_file, positive_seconds
from perfsim.errors import PerfsimError

EPILOG = """\
examples:
  perfsim groundtruth --list                           # Debian images and cached ones
  perfsim groundtruth --kernel 6.12 --fetch --out /tmp/6.12.jsonl
  perfsim groundtruth --vmlinuz ./vmlinuz-7.3 --profile 7.3 --out /tmp/7.3.jsonl
  sudo .venv/bin/perfsim groundtruth --native --grid ordinary --out /tmp/host-ordinary.jsonl
  perfsim groundtruth --compare tests/data/groundtruth/6.1.jsonl
  perfsim groundtruth --table tests/data/groundtruth   # the docs/groundtruth.md table
  sudo .venv/bin/perfsim groundtruth --native --grid zap-shared --out /tmp/zs.jsonl
  perfsim groundtruth --table tests/data/groundtruth/host-6.18-zap-shared.jsonl  # repetitions
  perfsim groundtruth --requests tests/data/groundtruth/requests/host-6.18-ordinary \
      tests/data/groundtruth/host-6.18-ordinary.jsonl  # one plan request file per call

--kernel V uses a cached image of kernel V (MAJOR.MINOR or a full Debian release) and, with
--fetch, downloads Debian's linux-image package through a scratch apt configuration in
perfsim's cache directory (the system's apt sources are not touched). Grids: shapes (E1-E5
at 64 MiB and 1 GiB and variants; a TCG boot takes about a minute), shapes-small (64 MiB
only), ordinary (buffers in the mmap area next to the C library; --native only).
--requests DIR RECORDS.jsonl writes, for every traced record, a `perfsim plan` request
file DIR/<case id>.toml describing the recorded address space and call (see
docs/groundtruth.md); it measures and compares nothing.
Records are compared with --profile (default: the record's kernel version) on the
record's platform (a TCG guest is bare-metal).

exit status: 0 every compared record agrees, 1 some disagree (listed), 2 bad input or a
missing tool/image (one line), 130 interrupted.
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "groundtruth", help="measure real kernels (QEMU TCG or native) and compare the profiles",
        description=__doc__.split("\n\n")[0], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--kernel", metavar="VERSION", help="Debian kernel to boot (e.g. 6.12)")
    src.add_argument("--vmlinuz", metavar="PATH", help="kernel image to boot")
    src.add_argument("--native", action="store_true", help="run the probe on this kernel")
    src.add_argument("--compare", metavar="RECORDS.jsonl", help="compare recorded calls only")
    src.add_argument("--table", metavar="DIR", help="print the Markdown table of DIR/*.jsonl "
                     "(or, given one .jsonl file, its table of repetitions)")
    src.add_argument("--list", action="store_true", help="list Debian images and cached ones")
    src.add_argument("--requests", metavar="DIR", help="write one plan request file per "
                     "record of RECORDS.jsonl into DIR")
    p.add_argument("records", nargs="?", metavar="RECORDS.jsonl",
                   help="the records --requests turns into request files")
    p.add_argument("--fetch", action="store_true", help="download the Debian image if needed")
    p.add_argument("--refresh", action="store_true", help="update the scratch package lists")
    p.add_argument("--grid", default=None, help="shapes (default), shapes-small, ordinary "
                   "(default with --native), zap (shrinks and MREMAP_FIXED over written "
                   "anon/shmem: the unmap's flushes), zap-shared (--native: in-place shrinks "
                   "of written memfd, shmem, tmpfs and ext4 files), truncate (a memfd "
                   "truncated, then shrunk or moved), dontneed (written memory partly handed back with "
                   "madvise(MADV_DONTNEED) first: the PTE tables CONFIG_PT_RECLAIM frees), "
                   "truncate-files (--native: the same on "
                   "tmpfs and ext4 files), zap-sparse (shrinks of a few written pages in a "
                   "kept PTE table: the flush's range), files (--native: ext4, tmpfs and "
                   "memfd mappings split by mprotect, moved in one call), random[:SEED[:COUNT]] "
                   "(COUNT cases, default 60, drawn from the probe's whole vocabulary with "
                   "SEED, default 1), random-files[:SEED[:COUNT]] (--native: with tmpfs and "
                   "ext4 files), kernel-picks (moves whose destination the kernel chooses: "
                   "the planner's choice is held to the address it returned), kernel-picks-shmem "
                   "(the same for memfd and shmem), "
                   "kernel-picks-files (--native: the same for memfd, shmem, tmpfs and ext4), "
                   "random-picks[:SEED[:COUNT]] and random-picks-files (random layouts moved "
                   "where the kernel chooses)")
    p.add_argument("--untraced", action="store_true", help="--native only: run the probe "
                   "without tracing, so each record holds the call's own time (call_ns) and "
                   "no flush counts (for scripts/groundtruth_latency.py)")
    p.add_argument("--profile", default=None, help="kernel profile to compare with")
    p.add_argument("--out", metavar="RECORDS.jsonl", help="write the records here")
    p.add_argument("--timeout", type=positive_seconds, default=1800,
                   help="seconds for one boot")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=run)
    return p


def _progress(args):
    if args.quiet:
        return lambda s: None
    return lambda s: print(f"groundtruth: {s}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from perfsim.groundtruth import grid as G
    from perfsim.groundtruth.compare import compare_records, markdown_table
    from perfsim.groundtruth.records import read_jsonl, write_jsonl

    progress = _progress(args)
    if args.records is not None and not args.requests:
        raise PerfsimError(f"unexpected argument {args.records!r}: a records file is only "
                           "taken with --requests DIR RECORDS.jsonl")
    if args.requests:
        return _requests(args, progress)
    if args.table and Path(args.table).is_file():
        from perfsim.groundtruth.compare import repetition_table

        recs = read_jsonl(args.table)
        if not recs:
            raise PerfsimError(f"--table {args.table!r}: no records in the file")
        print(repetition_table(recs))
        return 0
    if args.table:
        files = sorted(Path(args.table).glob("*.jsonl"))
        if not files:
            raise PerfsimError(f"--table: no .jsonl files in {args.table!r}")
        print(markdown_table(files))
        return 0
    if args.list:
        return _list(args, progress)
    if args.compare:
        recs = read_jsonl(args.compare)
        if not recs:
            # (compared, it said "0/0 compared calls agree" and exit 0)
            raise PerfsimError(f"--compare {args.compare!r}: no records in it; perfsim "
                               "groundtruth --out writes one JSON record per call")
        return _report(compare_records(recs, args.profile))
    if not (args.kernel or args.vmlinuz or args.native):
        raise PerfsimError("say what to measure: --kernel V, --vmlinuz PATH or --native "
                           "(or --compare, --table, --list)")
    if args.profile is not None:
        from perfsim.profiles import load_kernel

        load_kernel(args.profile)  # an unknown profile fails now, not after the boot
    if args.out:
        output_file(args.out, "--out", args.force)
    grid_name = args.grid or ("ordinary" if args.native else "shapes")
    if grid_name == "ordinary" and not args.native:
        raise PerfsimError("--grid ordinary needs --native (it lays buffers out next to the C "
                           "library, which a static probe in an initramfs does not have)")
    if (grid_name in ("zap-shared", "truncate-files", "files", "kernel-picks-files")
            or grid_name.split(":")[0] in ("random-files", "random-picks-files")) and not args.native:
        raise PerfsimError(f"--grid {grid_name} needs --native (its tmpfs and ext4 files live "
                           "in /dev/shm and /var/tmp, which an initramfs boot does not have)")
    if args.untraced and not args.native:
        raise PerfsimError("--untraced needs --native (a call's time under QEMU TCG says "
                           "nothing about a kernel's)")
    cases = G.named_grid(grid_name)
    if args.native:
        from perfsim.groundtruth.native import run_native

        _hdr, recs = run_native(cases, link="dynamic" if grid_name == "ordinary" else "static",
                                progress=progress, untraced=args.untraced)
    else:
        from perfsim.groundtruth.initramfs import busybox_path
        from perfsim.groundtruth.qemu import qemu_binary, run_qemu

        qemu_binary()
        busybox_path()
        image = _image(args, progress)
        _hdr, recs = run_qemu(image, cases, timeout_s=args.timeout, progress=progress)
    if args.out:
        write_jsonl(args.out, recs)
        progress(f"{len(recs)} records -> {args.out}")
    if args.untraced:
        progress(f"{len(recs)} calls timed untraced (no flush counts to compare)")
        return 0
    return _report(compare_records(recs, args.profile))


def _requests(args, progress) -> int:
    """``--requests DIR RECORDS.jsonl``: all files made in memory first, then each written
    to a temp file and renamed into place."""
    import os

    from perfsim.errors import check_output_dir
    from perfsim.groundtruth.records import read_jsonl
    from perfsim.groundtruth.requests import file_names, request_toml

    if not args.records:
        raise PerfsimError("--requests DIR needs the records file: --requests DIR RECORDS.jsonl")
    out_dir = Path(check_output_dir(args.requests, "--requests"))
    recs = read_jsonl(args.records)
    name = Path(args.records).name
    keep = [(n, r) for n, r in enumerate(recs, 1) if r.get("traced")]
    for n, r in enumerate(recs, 1):
        if not r.get("traced"):
            progress(f"{name} line {n} ({r.get('id')}): not traced, no request file")
        elif not isinstance(r.get("vmas"), list) or not r.get("id"):
            raise PerfsimError(f"{args.records}: line {n}: a probe record needs 'id' and "
                               "'vmas' (a list of the VMAs before the call)")
    if not keep:
        raise PerfsimError(f"{args.records}: no traced records to write request files for")
    try:
        texts = [(fn, request_toml(r, records_name=name, line=n))
                 for fn, (n, r) in zip(file_names([r for _, r in keep]), keep)]
    except (KeyError, TypeError, ValueError) as exc:
        raise PerfsimError(f"{args.records}: not a probe record file ({type(exc).__name__}: "
                           f"{exc})") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    for fn, text in texts:
        tmp = out_dir / f".{fn}.tmp{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, out_dir / fn)
    progress(f"{len(texts)} request files -> {out_dir}")
    return 0


def _image(args, progress) -> Path:
    from perfsim.groundtruth.debian import cached_images, fetch_vmlinuz, pick_release

    if args.vmlinuz:
        p = Path(args.vmlinuz)
        if not p.is_file():
            raise PerfsimError(f"--vmlinuz {args.vmlinuz!r}: no such file")
        return p
    if not args.fetch:
        have = cached_images()
        try:
            return have[pick_release({r: ("", "") for r in have}, args.kernel)]
        except PerfsimError:
            raise PerfsimError(f"--kernel {args.kernel}: no cached image (cached: "
                               f"{', '.join(sorted(have)) or 'none'}); pass --fetch to download "
                               "Debian's") from None
    return fetch_vmlinuz(args.kernel, refresh=args.refresh, progress=progress)


def _list(args, progress) -> int:
    from perfsim.groundtruth.debian import ScratchApt, cached_images, lists_fresh, version_key

    for rel, path in sorted(cached_images().items(), key=lambda kv: version_key(kv[0])):
        print(f"cached  {rel:28} {path}")
    apt = ScratchApt()
    if args.refresh or not lists_fresh(apt):
        progress(f"apt: updating the scratch package lists in {apt.root}")
        apt.update()
    for rel, (name, ver) in sorted(apt.image_packages().items(), key=lambda kv: version_key(kv[0])):
        print(f"debian  {rel:28} {name} {ver}")
    return 0


def _report(rows: list[dict]) -> int:
    bad = 0
    for r in rows:
        if r["status"] in ("agree", "disagree"):
            m, p = r["measured"], r["predicted"]
            ok = r["status"] == "agree"
            bad += not ok
            extra = f"  differs: {r['diff']}" if not ok else (
                f"  need_resched break: {r['excused']}" if r.get("excused") else "")
            print(f"{'ok  ' if ok else 'DIFF'} {r['kernel']} {r['platform']:10} {r['id']:58} "
                  f"measured {m['flush_calls']}/{m['full_flushes']}/{m['ipi_rounds']} "
                  f"predicted {p['flush_calls']}/{p['full_flushes']}/{p['ipi_rounds']}{extra}")
        else:
            print(f"skip {r['kernel']} {r['id']}: {r['status']}: {r.get('why')}")
    compared = sum(r["status"] in ("agree", "disagree") for r in rows)
    print(f"{compared - bad}/{compared} compared calls agree (flush calls / full flushes / IPI "
          "rounds, whole call and per phase)")
    return 1 if bad else 0
