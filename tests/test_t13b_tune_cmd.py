"""``perfsim tune`` as a whole command (issue 13, fifth pass): what it loads and when."""

import os
import subprocess
import sys
import textwrap


def _env_after(argv: list[str], env: dict | None = None) -> str:
    """OPENBLAS_NUM_THREADS as the command ``argv`` leaves it (run in a fresh interpreter,
    where numpy is not loaded yet)."""
    code = textwrap.dedent(f"""
        import os, sys
        from perfsim.cli.main import main
        main({argv!r})
        print("OPENBLAS_NUM_THREADS=" + os.environ.get("OPENBLAS_NUM_THREADS", "unset"),
              file=sys.stderr)
    """)
    full = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    full.update(env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=full, timeout=120)
    return out.stderr.strip().splitlines()[-1]


def test_a_command_without_linear_algebra_keeps_openblas_to_one_thread():
    assert _env_after(["tune", "--help"]) == "OPENBLAS_NUM_THREADS=1"
    assert _env_after(["report", "--help"]) == "OPENBLAS_NUM_THREADS=1"


def test_a_command_that_fits_keeps_the_default_blas_threads():
    assert _env_after(["calibrate", "--help"]) == "OPENBLAS_NUM_THREADS=unset"


def test_the_users_own_blas_setting_is_kept():
    assert _env_after(["tune", "--help"], {"OPENBLAS_NUM_THREADS": "2"}) == \
        "OPENBLAS_NUM_THREADS=2"


def test_main_called_where_numpy_is_loaded_leaves_the_environment_alone(monkeypatch):
    import numpy  # noqa: F401 - loaded, as in any program that calls main()

    from perfsim.cli.main import single_threaded_blas

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    single_threaded_blas("tune")
    assert "OPENBLAS_NUM_THREADS" not in os.environ
