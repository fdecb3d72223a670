"""A Ctrl-C raised inside a finalizer is not lost (perfsim.cli.main.keep_interrupts)."""

import gc
import subprocess
import sys
import textwrap


def test_a_keyboard_interrupt_discarded_in_a_finalizer_interrupts_the_main_thread_again():
    code = textwrap.dedent("""
        import gc, sys, time
        from perfsim.cli.main import keep_interrupts
        sys.unraisablehook = keep_interrupts

        class Finalized:
            def __del__(self):
                raise KeyboardInterrupt  # as a SIGINT arriving during a finalizer would

        try:
            Finalized()  # dropped at once: __del__ runs, its exception is unraisable
            t0 = time.monotonic()
            while time.monotonic() - t0 < 5:
                pass
            print("lost")
        except KeyboardInterrupt:
            print("interrupted")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "interrupted", (out.stdout, out.stderr)


def test_without_the_hook_cpython_discards_it():
    code = textwrap.dedent("""
        import time

        class Finalized:
            def __del__(self):
                raise KeyboardInterrupt

        try:
            Finalized()
            time.sleep(0.2)
            print("lost")
        except KeyboardInterrupt:
            print("interrupted")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30)
    assert out.stdout.strip() == "lost" and "KeyboardInterrupt" in out.stderr


def test_other_unraisable_exceptions_go_to_the_default_hook(monkeypatch):
    from perfsim.cli.main import keep_interrupts

    seen = []
    monkeypatch.setattr(sys, "__unraisablehook__", seen.append)
    monkeypatch.setattr(sys, "unraisablehook", keep_interrupts)

    class Finalized:
        def __del__(self):
            raise ValueError("boom")

    Finalized()
    gc.collect()
    assert len(seen) == 1 and seen[0].exc_type is ValueError


def test_a_command_runs_with_the_hook_and_restores_the_one_before(monkeypatch, capsys):
    from perfsim.cli import main as cli

    seen = []
    monkeypatch.setattr(cli, "build_parser", lambda words: seen.append(sys.unraisablehook)
                        or cli.Parser(prog="perfsim"))
    before = sys.unraisablehook
    cli.main([])
    assert seen == [cli.keep_interrupts]
    assert sys.unraisablehook is before
