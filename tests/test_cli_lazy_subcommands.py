"""The command line registers only the subcommand it runs (perfsim.cli.main.build_parser)."""

import subprocess
import sys

import pytest

from perfsim.cli.main import SUBCOMMANDS, _subparsers_action, build_parser


def _registered(argv):
    return set(_subparsers_action(build_parser(argv)).choices)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_a_command_line_naming_a_subcommand_registers_only_that_one(name):
    assert _registered([name, "--help"]) == {name}


@pytest.mark.parametrize("argv", [None, [], ["--help"], ["--version"], ["bogus"], ["-x", "tune"]])
def test_any_other_command_line_registers_every_subcommand(argv):
    assert _registered(argv) == set(SUBCOMMANDS)


def test_running_one_subcommand_imports_no_other_subcommand_module():
    code = ("import sys; from perfsim.cli.main import main, SUBCOMMANDS; main(['tune', '--help']); "
            "print(sorted(n for n in SUBCOMMANDS if f'perfsim.cli.{n}' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['tune']"


def test_a_misspelt_command_is_one_line_naming_every_command(capsys):
    from perfsim.cli.main import main

    assert main(["tun"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert all(n in err for n in SUBCOMMANDS)
