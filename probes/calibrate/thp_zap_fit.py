"""zap_huge_pmd_ns of one machine, from THP shrinks timed by zap_survey (docs/calibration.md,
"Zapping written memory").

``perfsim calibrate`` does not fit ``zap_huge_pmd_ns``: its design has no THP shrink, and its
cold-cache term, fitted on 4 KiB populations, would absorb the parameter (docs/calibration.md
says why). This script is the measurement the shipped profiles' values come from:

1. run ``zap_survey anon w shrink SIZE 1`` (``MADV_HUGEPAGE``, written, then
   ``mremap(p, 2 SIZE, SIZE, 0)``: the tail SIZE bytes are zapped as SIZE / 2 MiB huge PMDs)
   for each SIZE, ``--rounds`` times (each a median of 11 calls), or read such a survey back
   (``--from-survey``, the JSON this script writes with ``--out``);
2. price the same shrink with the profile and ``zap_huge_pmd_ns`` = 0 (``syscall_ns``,
   ``unmap_ns``, the first flush and the PMD-stride flush: what the call costs besides its
   huge PMDs; no cold-cache charge);
3. print the least-squares slope through the origin of (measured median - that price) on
   the huge PMDs zapped: ``zap_huge_pmd_ns``, fitted on relative error (as ``perfsim
   calibrate`` fits; the value kvm-xeon ships) and on absolute error (kvm-epyc's value), each
   with what it predicts against what was measured, size by size.

Usage (measuring needs THP and a C compiler, not root; reading a survey back needs neither)::

    python probes/calibrate/thp_zap_fit.py --cost kvm-xeon --out survey.json
    python probes/calibrate/thp_zap_fit.py --cost kvm-epyc --from-survey tests/data/zap/thp_zap_survey.json

Bad arguments are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
M = 1 << 20
SIZES = (2 * M, 4 * M, 8 * M, 16 * M, 32 * M, 64 * M)
THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


class Usage(Exception):
    """A bad argument or a machine this cannot measure on: one line, exit 2."""


def measure(rounds: int, sizes=SIZES, exe: str | None = None) -> dict:
    """The survey: ``rounds`` rounds of every size, each a median of 11 calls (ns)."""
    if not os.path.exists(THP_ENABLED):
        raise Usage(f"no THP on this kernel ({THP_ENABLED} missing)")
    thp = Path(THP_ENABLED).read_text().strip()
    if "[never]" in thp:
        raise Usage(f"THP is 'never' here ({THP_ENABLED}: {thp}): MADV_HUGEPAGE gets no huge PMD")
    if exe is None:
        from perfsim.calibrate.cbuild import build_c_program
        from perfsim.errors import PerfsimError

        try:
            exe = str(build_c_program(HERE / "zap_survey.c", "zap_survey", "zap_survey"))
        except PerfsimError as exc:
            raise Usage(str(exc)) from None
    out = []
    for r in range(rounds):
        at = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        med = []
        for s in sizes:
            line = subprocess.run([exe, "anon", "w", "shrink", str(s), "1"], check=True,
                                  capture_output=True, text=True).stdout
            fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
            med.append(int(fields["median_ns"]))
        out.append({"at": at, "median_ns": med})
        print(f"round {r + 1}/{rounds} ({at}): " + ", ".join(f"{v / 1e3:.1f}" for v in med)
              + " us", file=sys.stderr)
    load = os.getloadavg()
    from perfsim.host.measure import host_info

    return {
        "what": "zap_survey medians (median of 11 calls each, ns) of THP shrinks: "
                "mremap(p, 2*SIZE, SIZE, 0) of written anonymous memory with MADV_HUGEPAGE, "
                "the tail SIZE bytes zapped as SIZE/2 MiB huge PMDs (zap_huge_pmd)",
        "command": "python probes/calibrate/thp_zap_fit.py (zap_survey anon w shrink SIZE_BYTES 1)",
        "machine": f"{host_info()['cpu_model']}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
                   f"THP enabled {thp.split('[')[1].split(']')[0]!r}",
        "date": f"{out[0]['at']} - {out[-1]['at']}",
        "load": "load average after: " + ", ".join(f"{x:.2f}" for x in load),
        "unit": "ns per call (median of 11)",
        "size_zapped_bytes": list(sizes),
        "huge_pmds_zapped": [s // (2 * M) for s in sizes],
        "rounds": out,
    }


def base_ns(size: int, cost) -> int:
    """The price of the shrink of ``2 * size`` THP bytes to ``size`` under ``cost`` with
    ``zap_huge_pmd_ns`` = 0: everything but its huge PMDs (no cold-cache charge)."""
    from perfsim.cost import predict
    from perfsim.cost.profile import load_cost_profile
    from perfsim.mm.build import Population, single_move_space
    from perfsim.planner import MoveRequest, plan_mremap
    from perfsim.profiles import resolve_target

    prof = load_cost_profile(cost).fixed().with_values(zap_huge_pmd_ns=0)
    t = resolve_target("6.18", "x86_64")
    src = 0x7F0000000000
    space = single_move_space(t, src=src, length=2 * size, thp=True,
                              populate=Population.parse("full"))
    plan = plan_mremap(space, MoveRequest(src, 2 * size, new_len=size, maymove=False,
                                          fixed=False), t)
    if plan.errno is not None or plan.syscall.huge_pmds_zapped != size // (2 * M):
        raise RuntimeError(f"the planned {size >> 20} MiB THP shrink zaps "
                           f"{plan.syscall.huge_pmds_zapped} huge PMDs")
    return predict(plan, prof, cpus=1).predicted_ns


def fit(survey: dict, cost) -> dict:
    """Per-size medians over the rounds, the price without huge PMDs, and the slope."""
    sizes = survey["size_zapped_bytes"]
    pmds = survey["huge_pmds_zapped"]
    rounds = [r["median_ns"] for r in survey["rounds"]]
    if not rounds or any(len(r) != len(sizes) for r in rounds) or len(pmds) != len(sizes):
        raise Usage("the survey's rounds do not have one median per size")
    med = [statistics.median(r[i] for r in rounds) for i in range(len(sizes))]
    base = [base_ns(s, cost) for s in sizes]
    resid = [m - b for m, b in zip(med, base)]
    absolute = sum(n * r for n, r in zip(pmds, resid)) / sum(n * n for n in pmds)
    relative = (sum(n * r / m ** 2 for n, r, m in zip(pmds, resid, med))
                / sum(n * n / m ** 2 for n, m in zip(pmds, med)))
    return {"sizes": sizes, "pmds": pmds, "median_ns": med, "base_ns": base,
            "relative_ns": round(relative), "absolute_ns": round(absolute)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--cost", required=True, metavar="PROFILE",
                    help="cost profile pricing the rest of each call (built-in name or .toml)")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of every size (default 6)")
    ap.add_argument("--from-survey", metavar="JSON", help="fit a recorded survey, measure nothing")
    ap.add_argument("--out", metavar="JSON", help="write the survey measured here to this file")
    ap.add_argument("--exe", metavar="PATH", help="a built zap_survey (default: build one)")
    args = ap.parse_args(argv)
    try:
        from perfsim.cost.profile import load_cost_profile
        from perfsim.errors import PerfsimError

        try:
            load_cost_profile(args.cost)
        except PerfsimError as exc:
            raise Usage(str(exc)) from None
        if args.rounds < 1:
            raise Usage(f"--rounds {args.rounds}: must be at least 1")
        if args.from_survey and (args.out or args.exe):
            raise Usage("--from-survey reads a survey: --out and --exe measure one")
        if args.out and os.path.exists(args.out):
            raise Usage(f"--out {args.out}: exists; give a new file")
        if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
            raise Usage(f"--out {args.out}: its directory does not exist")
        if args.from_survey:
            try:
                survey = json.loads(Path(args.from_survey).read_text())
            except (OSError, ValueError) as exc:
                raise Usage(f"--from-survey {args.from_survey}: {exc}") from None
            if not isinstance(survey, dict) or not {"size_zapped_bytes", "huge_pmds_zapped",
                                                    "rounds"} <= survey.keys():
                raise Usage(f"--from-survey {args.from_survey}: not a zap survey "
                            "(size_zapped_bytes, huge_pmds_zapped, rounds)")
        else:
            survey = measure(args.rounds, exe=args.exe)
            if args.out:
                Path(args.out).write_text(json.dumps(survey, indent=1) + "\n")
        res = fit(survey, args.cost)
    except Usage as exc:
        print(f"thp_zap_fit: error: {exc}", file=sys.stderr)
        return 2
    print(f"{'zapped':>8} {'huge PMDs':>9} {'measured':>10} {'rest of call':>13} {'per PMD':>9}")
    for s, n, m, b in zip(res["sizes"], res["pmds"], res["median_ns"], res["base_ns"]):
        print(f"{s >> 20:>5} MiB {n:>9} {m / 1e3:>7.1f} us {b / 1e3:>10.1f} us "
              f"{(m - b) / n:>6.0f} ns")
    for key, what in (("relative_ns", "relative error, as perfsim calibrate fits"),
                      ("absolute_ns", "absolute error")):
        x = res[key]
        errs = ", ".join(f"{(b + x * n) / m - 1:+.0%}" for n, m, b in
                         zip(res["pmds"], res["median_ns"], res["base_ns"]))
        print(f"zap_huge_pmd_ns = {x} ns by least squares of {what} (through the origin, on "
              f"the huge PMDs zapped; {args.cost}); predicted vs measured: {errs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
