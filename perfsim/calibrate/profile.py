"""Stage 3 of calibration: write the fitted cost profile (TOML) with its provenance.

The profile is an ordinary cost profile (``load_cost_profile`` reads it). Provenance lives
where the schema allows it: the header comments and ``description`` name the data file and
its sha256, the fit file and the command; every parameter's ``source`` says whether it was
fitted (with its bootstrap standard deviation and 95 % interval), tied, or kept from the
prior, and why. The text is validated with ``parse_cost_profile`` before it is written
atomically, so a failed or interrupted calibration never leaves a corrupt profile behind.
"""

from __future__ import annotations

import json

from perfsim.calibrate.fit import TIES, FitResult
from perfsim.cost import PARAM_NAMES, CostProfile, parse_cost_profile


def _q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a TOML basic string, for our characters


def render_profile(fit: FitResult, prior: CostProfile, *, name: str, machine: dict,
                   data_name: str, data_sha256: str, fit_name: str, command: str,
                   date: str, status: str, missing: list[str],
                   archs: tuple[str, ...] | None = None, condition: str = "",
                   timer: str = "") -> str:
    """The profile's TOML text; ``archs``: the arch profiles it is for (default: the
    prior's); ``condition`` / ``timer``: which measuring condition it was fitted from and who
    timed its latencies (named in the description)."""
    archs = tuple(archs) if archs else prior.archs
    virt = machine.get("virtualization", "?")
    if machine.get("hypervisor_flag"):
        virt = f"VM guest (hypervisor CPU flag; systemd-detect-virt: {virt})"
    mdesc = (f"{machine.get('cpu_model', '?')}, {machine.get('ncpus', '?')} CPUs, {virt}, "
             f"Linux {machine.get('kernel', '?')}")
    where = f"{data_name} (sha256 {data_sha256[:16]}), {len(fit.fit_ids)} configurations"
    how = ""
    if condition:
        how = f"; {condition} condition" + (f", latencies timed by {timer}" if timer else "")
    part = "" if status == "complete" else f" PARTIAL ({status}): " + "; ".join(missing)[:400]
    lines = [
        f"# Cost profile fitted by perfsim calibrate on {date}.",
        f"# command: {command}",
        f"# data: {data_name}  sha256={data_sha256}",
        f"# fit:  {fit_name}  (values, bootstrap intervals, residuals, robust weights)",
        f"# status: {status}",
    ]
    if condition:
        lines.append(f"# fitted from: the {condition} condition"
                     + (f" (latencies timed by {timer})" if timer else ""))
    for m in missing:
        lines.append(f"#   missing: {m}")
    lines += [
        f"name = {_q(name)}",
        "description = " + _q(f"fitted by perfsim calibrate from {where}; prior "
                              f"{prior.name}{how}{part}"),
        f"arch = {_q(prior.arch)}",
        "archs = [" + ", ".join(_q(a) for a in archs) + "]",
        f"ipi_shootdown = {'true' if prior.ipi_shootdown else 'false'}",
        f"machine = {_q(mdesc)}",
    ]
    for p in PARAM_NAMES:
        st = fit.status[p]
        v = int(fit.values[p])
        lines += ["", f"[params.{p}]", f"ns = {v}"]
        sig = fit.sigma.get(p, 0.0)
        if sig > 0:
            lines += ['dist = "lognormal"', f"sigma = {sig}"]
        if st == "fitted":
            unc = ""
            if p in fit.sd:
                lo, hi = fit.ci[p]
                unc = (f" ± {fit.sd[p]:.0f} ns (bootstrap sd), 95% interval "
                       f"[{lo:.0f}, {hi:.0f}] ns over {fit.n_boot} resamples")
            jit = f"; jitter lognormal sigma={sig} from call-to-call spread" if sig else ""
            src = (f"fitted by perfsim calibrate (robust NNLS, relative error): {v} ns{unc}{jit}; "
                   f"data {where}; machine {mdesc}; {date}")
        elif st == "tied":
            f, ratio = TIES[p]
            src = (f"tied to {f} x {ratio:g} (same work, a single entry swap (R16c); too few "
                   f"per call to resolve); data {where}")
        else:
            why = ("no configuration in the data exercises it" if st == "prior (no data)"
                   else "not separable from the fitted parameters by whole-call timings")
            src = f"{prior.name} value ({why}): {prior.param(p).source}"
        lines.append(f"source = {_q(src)}")
    cc = fit.cold_cache
    if cc and cc.get("saturation_bytes"):
        unc = ""
        if "sd" in cc:
            lo, hi = cc["ci95"]
            unc = (f" ± {cc['sd']:.0f} ns (bootstrap sd), 95% interval [{lo:.0f}, {hi:.0f}] "
                   f"ns over {fit.n_boot} resamples")
        sat_mib = cc["saturation_bytes"] / (1 << 20)
        lines += ["", "[cold_cache]", f"ns = {int(cc['ns'])}",
                  f"saturation_bytes = {int(cc['saturation_bytes'])}",
                  "source = " + _q(
                      f"fitted by perfsim calibrate from C-timed latencies: {int(cc['ns'])} ns"
                      f"{unc} once per call whose caller wrote >= {sat_mib:g} MiB just before "
                      f"it (linear below; saturation size chosen by profile search); data "
                      f"{where}; machine {mdesc}; {date}")]
    text = "\n".join(lines) + "\n"
    parse_cost_profile(text, f"generated profile {name!r}")  # never write something invalid
    return text
