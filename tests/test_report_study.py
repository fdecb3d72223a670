"""Study files and the report CLI: bad input gives one clear line and exit status 2."""

from __future__ import annotations

import pytest

from perfsim.cli.main import main
from perfsim.errors import PerfsimError
from perfsim.report import load_study, parse_study


@pytest.mark.parametrize("data, needle", [
    ({"bogus": 1}, "bogus: unknown key 'bogus'; allowed keys: name"),
    ({"calls": {"classes": ["diagonal"]}}, "calls.classes[0]: allowed:"),
    ({"calls": {"sizes": ["4Q"]}}, "size"),
    ({"calls": {"threads": [0]}}, "calls.threads"),
    ({"calls": {"colour": 1}}, "calls.colour: unknown key 'colour'; allowed keys: sizes"),
    ({"kernels": ["6.18"]}, "kernels: give exactly two different kernels"),
    ({"name": "a/b"}, "name: a study name is used as a directory name"),
    ({"tune": [{"workload": "x"}]}, "tune[0]: knobs: Field required"),
    ({"traces": [{"class": "pud", "size": "1G", "color": 1}]}, "traces[0].color: unknown key 'color'"),
])
def test_bad_study_is_one_line_naming_the_field(data, needle):
    with pytest.raises(PerfsimError) as e:
        parse_study(data, "s.toml")
    msg = str(e.value)
    assert msg.startswith("s.toml: ") and needle in msg and "\n" not in msg


def test_unknown_kernel_profile_is_reported_before_running(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('kernels = ["6.6", "9.99"]\ntune = []\n[workloads]\nenabled = false\n'
                 '[contention]\nenabled = false\n[calls]\nsizes = ["4K"]\nthreads = [1]\n'
                 'backings = ["anon"]\nthp = [false]\n')
    assert main(["report", "--study", str(p), "--out", str(tmp_path), "--quiet",
                 "--executor", "serial"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown kernel profile '9.99'" in err[0]
    assert not (tmp_path / "default").exists()


def test_bad_study_file_exits_2_with_one_line(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text("[calls]\nsizes = [\n")
    assert main(["report", "--study", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perfsim: error:") and "not valid TOML" in err[0]
    assert main(["report", "--study", str(tmp_path / "nope.toml")]) == 2


def test_unknown_workload_in_study(tmp_path, capsys):
    p = tmp_path / "s.toml"
    p.write_text('tune = []\n[workloads]\nnames = ["no_such_thing"]\n[calls]\nsizes = ["4K"]\n'
                 'threads = [1]\nbackings = ["anon"]\nthp = [false]\n[contention]\n'
                 'enabled = false\n')
    assert main(["report", "--study", str(p), "--out", str(tmp_path), "--quiet",
                 "--executor", "serial"]) == 2
    assert "unknown workload 'no_such_thing'" in capsys.readouterr().err


def test_shipped_studies_validate():
    from pathlib import Path

    for p in sorted((Path(__file__).parents[1] / "studies").glob("*.toml")):
        if p.name.startswith("tune_"):
            from perfsim.tune import load_tune

            load_tune(p)
        else:
            load_study(p)
