"""Fetch a Debian kernel image (``linux-image-*``) and keep only its vmlinuz.

A scratch apt configuration lives in ``<cache>/apt``: its own sources list, state and
package cache, so the system's apt sources and lists are never touched. The sources are
built from the machine's own ``/etc/apt`` configuration: the Debian archive entry found
there (its URI and keyring) with the suites kernels come from -- the configured ones plus
``bookworm-backports``, ``trixie``, ``trixie-updates`` and ``trixie-backports``. Nothing here names
a mirror: the URI is whatever this machine uses.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from perfsim.errors import PerfsimError
from perfsim.groundtruth.cache import cache_dir

EXTRA_SUITES = ("bookworm-backports", "trixie", "trixie-updates", "trixie-backports")


@dataclass(frozen=True)
class Archive:
    uri: str
    signed_by: str
    suites: tuple[str, ...]


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    out, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
            continue
        if line.startswith("#"):
            continue
        if line[0].isspace() and key:
            cur[key] += " " + line.strip()
            continue
        k, _, v = line.partition(":")
        key = k.strip()
        cur[key] = v.strip()
    if cur:
        out.append(cur)
    return out


def system_archive(etc: str = "/etc/apt") -> Archive:
    """The Debian archive this machine's apt uses (not the security archive)."""
    found: list[Archive] = []
    for path in sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.sources"))):
        for st in _deb822_stanzas(Path(path).read_text()):
            if "deb" not in st.get("Types", "").split():
                continue
            suites = tuple(st.get("Suites", "").split())
            for uri in st.get("URIs", "").split():
                found.append(Archive(uri, st.get("Signed-By", ""), suites))
    lists = [os.path.join(etc, "sources.list")]
    lists += sorted(glob.glob(os.path.join(etc, "sources.list.d", "*.list")))
    for path in lists:
        if not os.path.isfile(path):
            continue
        for line in Path(path).read_text().splitlines():
            m = re.match(r"^\s*deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
            if m:
                opts = m[1] or ""
                sb = re.search(r"signed-by=(\S+?)[\s\]]", opts)
                found.append(Archive(m[2], sb[1] if sb else "", (m[3],)))
    debian = [a for a in found
              if any(re.fullmatch(r"(bookworm|trixie|forky|sid|bullseye|stable|testing|unstable)"
                                  r"(-updates|-backports)?", s) for s in a.suites)]
    if not debian:
        raise PerfsimError(f"no Debian archive in {etc}/sources.list*: perfsim needs one to "
                           "fetch kernel images (or pass --vmlinuz)")
    return debian[0]


class ScratchApt:
    """apt-get and apt-cache run against ``<cache>/apt`` only."""

    def __init__(self, root: Path | None = None, archive: Archive | None = None) -> None:
        self.root = root or cache_dir("apt")
        self.archive = archive or system_archive()
        for sub in ("etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d",
                    "state/lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        status = self.root / "state" / "status"
        if not status.exists():
            status.write_text("")
        suites = list(dict.fromkeys(self.archive.suites + EXTRA_SUITES))
        signed = f"Signed-By: {self.archive.signed_by}\n" if self.archive.signed_by else ""
        text = (f"Types: deb\nURIs: {self.archive.uri}\nSuites: {' '.join(suites)}\n"
                f"Components: main\nArchitectures: amd64\n{signed}")
        src = self.root / "etc" / "sources.list.d" / "debian.sources"
        if not src.exists() or src.read_text() != text:
            src.write_text(text)
        (self.root / "etc" / "sources.list").write_text("")

    def options(self) -> list[str]:
        r = self.root
        return ["-o", f"Dir::Etc::sourcelist={r}/etc/sources.list",
                "-o", f"Dir::Etc::sourceparts={r}/etc/sources.list.d",
                "-o", f"Dir::Etc::preferences={r}/etc/preferences",
                "-o", f"Dir::Etc::preferencesparts={r}/etc/preferences.d",
                "-o", f"Dir::Etc::parts={r}/etc/apt.conf.d",
                "-o", f"Dir::State={r}/state",
                "-o", f"Dir::State::status={r}/state/status",
                "-o", f"Dir::Cache={r}/cache",
                "-o", "APT::Architecture=amd64",
                "-o", "Acquire::Languages=none",
                "-o", "Debug::NoLocking=1"]

    def run(self, tool: str, *args: str, cwd: str | None = None) -> str:
        exe = shutil.which(tool)
        if not exe:
            raise PerfsimError(f"{tool} not found: fetching Debian kernels needs apt")
        res = subprocess.run([exe, *self.options(), *args], capture_output=True, text=True,
                             cwd=cwd)
        if res.returncode != 0:
            last = (res.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise PerfsimError(f"{tool} {' '.join(args)} failed: {last}")
        return res.stdout

    def update(self) -> None:
        self.run("apt-get", "update", "-q")

    def image_packages(self) -> dict[str, tuple[str, str]]:
        """``{kernel release: (package name, version)}`` of every signed or unsigned
        ``linux-image-<release>-amd64`` package the scratch sources carry (the newest
        version of each)."""
        out = self.run("apt-cache", "search", "--names-only", r"^linux-image-[0-9].*-amd64(-unsigned)?$")
        pkgs = {}
        for line in out.splitlines():
            name = line.split(" - ", 1)[0].strip()
            m = re.fullmatch(r"linux-image-(\d+\.\d+[^ ]*?-amd64)(-unsigned)?", name)
            if not m or "-rt-" in name or "-cloud-" in name:
                continue
            rel = m[1]
            if rel in pkgs and not m[2]:
                continue
            pkgs[rel] = (name, "")
        if not pkgs:
            return {}
        pol = self.run("apt-cache", "policy", *[n for n, _ in pkgs.values()])
        cand = dict(re.findall(r"^(\S+):\n\s+Installed:.*\n\s+Candidate:\s*(\S+)", pol, re.M))
        return {rel: (name, cand.get(name, "")) for rel, (name, _) in pkgs.items()
                if cand.get(name, "(none)") != "(none)"}


def version_key(release: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", release)[:3])


def pick_release(available: dict[str, tuple[str, str]], version: str) -> str:
    """The newest packaged release of kernel ``version`` (``"6.12"``), or one naming the
    exact release."""
    if version in available:
        return version
    cands = [r for r in available if re.match(rf"^{re.escape(version)}[.-]", r)]
    if not cands:
        known = sorted({".".join(r.split(".")[:2]) for r in available}, key=version_key)
        raise PerfsimError(f"kernel {version!r}: no Debian image in the scratch sources; "
                           f"available: {', '.join(known)}")
    return max(cands, key=lambda r: (version_key(r), r))


def cached_images() -> dict[str, Path]:
    """``{release: vmlinuz path}`` of the images already in the cache."""
    return {p.name[len("vmlinuz-"):]: p for p in cache_dir("images").glob("vmlinuz-*")
            if not p.name.endswith(".tmp")}


def lists_fresh(apt: ScratchApt, max_age_s: float = 86400) -> bool:
    import time

    lists = list((apt.root / "state" / "lists").glob("*_Packages*"))
    return bool(lists) and time.time() - min(p.stat().st_mtime for p in lists) < max_age_s


def fetch_vmlinuz(version: str, *, refresh: bool = False, progress=print) -> Path:
    """``<cache>/images/vmlinuz-<release>`` for kernel ``version`` (``"6.12"`` or a full
    release), downloaded on first use: the package is unpacked, its vmlinuz and config
    kept, the rest deleted. A cached image is used as is unless ``refresh``."""
    images = cache_dir("images")
    have = cached_images()
    if not refresh:
        try:
            return have[pick_release({r: ("", "") for r in have}, version)]
        except PerfsimError:
            pass
    apt = ScratchApt()
    if refresh or not lists_fresh(apt):
        progress(f"apt: updating the scratch package lists in {apt.root}")
        apt.update()
    available = apt.image_packages()
    rel = pick_release(available, version)
    target = images / f"vmlinuz-{rel}"
    if target.is_file():
        return target
    name, ver = available[rel]
    with tempfile.TemporaryDirectory(dir=images) as tmp:
        # Newer Debian kernels keep the image in linux-binary-<release>, a dependency of
        # the linux-image-<release> package; try the package, then what it depends on.
        tried = []
        queue = [f"{name}={ver}" if ver else name]
        while queue:
            pkg = queue.pop(0)
            tried.append(pkg)
            progress(f"apt: downloading {pkg}")
            unpack = _download_unpack(apt, pkg, tmp)
            found = (glob.glob(os.path.join(unpack, "boot", "vmlinuz-*"))
                     + glob.glob(os.path.join(unpack, "usr", "lib", "modules", "*", "vmlinuz")))
            if found:
                break
            show = apt.run("apt-cache", "show", pkg)
            deps = re.search(r"^Depends:(.*)$", show, re.M)
            queue += [d for d in re.findall(r"(linux-(?:binary|image)-\S+?)(?=[\s,(]|$)",
                                            deps[1] if deps else "")
                      if d.startswith("linux-binary-") or d.endswith("-unsigned")]
        else:
            raise PerfsimError(f"no vmlinuz (/boot/vmlinuz-*, /usr/lib/modules/*/vmlinuz) in "
                               f"{', '.join(tried)}")
        cfg = (glob.glob(os.path.join(unpack, "boot", "config-*"))
               + glob.glob(os.path.join(unpack, "usr", "lib", "modules", "*", "config")))
        if cfg:
            shutil.copy(cfg[0], images / f"config-{rel}")
        tmp_target = target.with_name(target.name + ".tmp")
        shutil.copy(found[0], tmp_target)
        os.replace(tmp_target, target)
    return target


def _download_unpack(apt: ScratchApt, pkg: str, tmp: str) -> str:
    d = tempfile.mkdtemp(dir=tmp)
    apt.run("apt-get", "download", "-q", pkg, cwd=d)
    debs = glob.glob(os.path.join(d, "*.deb"))
    if not debs:
        raise PerfsimError(f"apt-get download {pkg} produced no .deb")
    unpack = os.path.join(d, "x")
    res = subprocess.run(["dpkg-deb", "-x", debs[0], unpack], capture_output=True, text=True)
    if res.returncode != 0:
        raise PerfsimError(f"dpkg-deb -x {os.path.basename(debs[0])} failed: "
                           f"{res.stderr.strip()[-200:]}")
    os.unlink(debs[0])
    return unpack


def list_versions(update: bool = True) -> dict[str, tuple[str, str]]:
    apt = ScratchApt()
    if update:
        apt.update()
    return apt.image_packages()
