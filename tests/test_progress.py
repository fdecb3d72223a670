"""perfsim.progress: a bar on a terminal, rate-limited whole lines in a log."""

from __future__ import annotations

import io

from perfsim.progress import LineProgress, progress


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_non_terminal_stream_gets_whole_lines_not_carriage_returns():
    out = io.StringIO()
    bar = progress(100, desc="sweep x", stream=out)
    assert isinstance(bar, LineProgress)
    for _ in range(100):
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text
    assert text.endswith("sweep x: 100/100 sim (100%), 0 s\n")


def test_line_progress_prints_at_most_once_per_interval_and_once_at_close():
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(10, desc="d", unit="sim", stream=out, interval_s=5.0, clock=clock)
    for i in range(10):
        clock.t = i * 1.0
        bar.update(1)
    bar.close()
    bar.close()  # closing twice prints nothing more
    lines = out.getvalue().splitlines()
    assert len(lines) == 2  # at t=5 (6 done), none at t=9 (4 s later), then the closing line
    assert lines[0].startswith("d: 6/10 sim (60%), 5 s, about 3 s left")
    assert lines[-1].startswith("d: 10/10 sim (100%)")


def test_postfix_is_shown():
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(2, desc="d", unit="w", stream=out, clock=clock)
    bar.set_postfix(failed=1)
    bar.update(2)
    bar.close()
    assert "[failed=1]" in out.getvalue()


def test_a_total_not_known_shows_the_count_alone():
    """A trace replay does not know its calls in advance: ``total`` 0 is "not known", so
    the line says how many are done, not "5/0"."""
    out, clock = io.StringIO(), _Clock()
    bar = LineProgress(0, desc="t", unit="calls", stream=out, clock=clock)
    bar.update(5)
    bar.close()
    assert out.getvalue() == "t: 5 calls, 0 s\n"
