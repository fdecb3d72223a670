"""A non-editable install (``pip install .``) carries what a checkout has: every Python
package, and the shipped workloads (with their scenarios and traces), studies and sweeps,
which install inside the package as ``perfsim/_shipped/<kind>/`` (pyproject.toml maps the
top-level directories there; :func:`perfsim.shipped.data_dir` finds either)."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from perfsim import shipped

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def shipped_files(kind: str) -> list[str]:
    """The files of a shipped kind in the checkout, relative to its directory (no caches)."""
    d = ROOT / kind
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_every_python_package_is_listed():
    found = sorted(".".join(p.parent.relative_to(ROOT).parts)
                   for p in (ROOT / "perfsim").rglob("__init__.py"))
    listed = [p for p in CONFIG["packages"] if not p.startswith("perfsim._shipped")]
    assert sorted(listed) == found


@pytest.mark.parametrize("kind", shipped.KINDS)
def test_every_shipped_file_is_package_data(kind):
    pkg = f"perfsim._shipped.{kind}"
    assert pkg in CONFIG["packages"]
    assert CONFIG["package-dir"][pkg] == kind
    globs = CONFIG["package-data"][pkg]
    files = shipped_files(kind)
    assert files, f"nothing shipped in {kind}/"
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/")
                                          for g in globs)]
    assert missed == [], f"{kind}/ files no package-data glob of {pkg} ships: {missed}"


def test_data_dir_is_the_checkout_in_a_source_tree():
    for kind in shipped.KINDS:
        assert shipped.data_dir(kind) == ROOT / kind
    assert "quick" in shipped.names("studies") and "gc_compaction" in shipped.names("workloads")
    with pytest.raises(ValueError, match="allowed: workloads, studies, sweeps, probes"):
        shipped.data_dir("models")


def test_data_dir_is_inside_the_package_when_installed(tmp_path, monkeypatch):
    pkg = tmp_path / "site-packages" / "perfsim"
    (pkg / "_shipped" / "studies").mkdir(parents=True)
    (pkg / "_shipped" / "studies" / "quick.toml").write_text('name = "quick"\n')
    (tmp_path / "site-packages" / "studies").mkdir()  # no pyproject.toml: not a checkout
    monkeypatch.setattr(shipped, "_PACKAGE", pkg)
    assert shipped.data_dir("studies") == pkg / "_shipped" / "studies"
    assert shipped.names("studies") == ["quick"]
    assert shipped.resolve("studies", "quick") == pkg / "_shipped" / "studies" / "quick.toml"
    assert shipped.resolve("studies", "nope") == Path("nope")
    assert shipped.names("sweeps") == []


def _build_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the tree (no build isolation: offline, and nothing
    written into the checkout)."""
    try:
        import setuptools
    except ImportError:
        pytest.skip("setuptools is not installed")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (70, 1):
        pytest.skip(f"setuptools {setuptools.__version__} < 70.1 has no built-in bdist_wheel")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("perfsim", *shipped.KINDS):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    out = tmp_path / "dist"
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "--no-index", "-q", "-w", str(out), str(src)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    (wheel,) = out.glob("perfsim-*.whl")
    return wheel


def test_the_wheel_carries_every_shipped_file(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for kind in shipped.KINDS:
        for f in shipped_files(kind):
            assert f"perfsim/_shipped/{kind}/{f}" in names
    assert "perfsim/data/kernels/6.18.toml" in names
    assert "perfsim/cli/main.py" in names and "perfsim/shipped.py" in names


def test_installed_wheel_lists_workloads_and_runs_the_quick_study(tmp_path):
    """``pip install`` of the wheel (into a directory, with this environment's dependencies)
    then, from a directory that is no checkout: ``perfsim workload list`` and ``perfsim
    report --study quick``. (Dependencies come from this environment: nothing downloads.)"""
    wheel = _build_wheel(tmp_path)
    target = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                        "--target", str(target), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = dict(os.environ, PYTHONPATH=str(target), MPLBACKEND="Agg")

    def perfsim(*argv):
        return subprocess.run([sys.executable, "-m", "perfsim", *argv], capture_output=True,
                              text=True, timeout=600, cwd=work, env=env)

    where = subprocess.run([sys.executable, "-c", "import json, perfsim, perfsim.shipped as s; "
                            "print(json.dumps([perfsim.__file__, str(s.data_dir('workloads'))]))"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=60)
    init, wdir = json.loads(where.stdout)
    assert Path(init).is_relative_to(target) and Path(wdir) == target / "perfsim/_shipped/workloads"
    listed = perfsim("workload", "list")
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} \
        == set(shipped.names("workloads"))
    probe = subprocess.run([sys.executable, "-c", "from perfsim.groundtruth.probe import SOURCE; "
                            "from perfsim.calibrate.probe import probe_source; "
                            "print(SOURCE.is_file(), probe_source().is_file())"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=60)
    assert probe.stdout.split() == ["True", "True"], probe.stderr  # the C probes ship too
    rep = perfsim("report", "--study", "quick", "--executor", "serial", "--quiet", "--out", "r")
    assert rep.returncode == 0, rep.stderr
    assert (work / "r" / "quick" / "index.html").is_file()
