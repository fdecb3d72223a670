"""The built-in profile names, listed once per process, are the package data folder's."""
from importlib import resources

import pytest

from perfsim.cost.profile import cost_profile_names
from perfsim.profiles import arch_names, builtin_names, kernel_names


def _listing(sub: str) -> list[str]:
    folder = resources.files("perfsim") / "data" / sub
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


@pytest.mark.parametrize("sub", ["arch", "kernels", "cost"])
def test_the_builtin_names_are_the_data_folders_toml_files(sub):
    assert list(builtin_names(sub)) == _listing(sub)
    assert builtin_names(sub)  # every folder ships profiles


def test_each_names_function_is_its_folders_listing_in_its_order():
    assert arch_names() == _listing("arch")
    assert cost_profile_names() == _listing("cost")
    assert kernel_names() == sorted(_listing("kernels"),
                                    key=lambda n: tuple(int(x) for x in n.split(".")))


def test_a_callers_list_of_names_is_its_own():
    names = cost_profile_names()
    names.clear()
    assert cost_profile_names() == _listing("cost")
    arch = arch_names()
    arch.append("not-an-arch")
    assert "not-an-arch" not in arch_names()
