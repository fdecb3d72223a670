"""A figure process: a child forked at the start of ``perfsim tune`` that imports what the
command needs only after its search, matplotlib (about 0.3 CPU-s), on the core the command's
own start-up leaves idle; then it draws the tuning's figure while the command writes its
tables (and, when asked, computes t quantiles the table of :mod:`perfsim.batch.t_table`
lacks, with scipy).

``perfsim tune`` spends its first third of a second importing what the search needs
(pydantic, SimPy, the planner) on one core; the figure's imports, run in that process
afterwards or in a thread during the search, would lengthen the critical path by as much
again, and on two cores they would compete with the pool's two workers. Here they run on
the second core while it would idle, in a separate process (a thread would hold the GIL),
and the figure's drawing (a PNG and an SVG, about 0.15 s) overlaps the writing of the rest.

The child computes what this process would: :func:`~perfsim.batch.stats.t_quantile` (a
float, sent back exactly) and the figure by the same function from the same numbers
(:func:`~perfsim.report.tune_figure.draw_tune` of a
:class:`~perfsim.report.tune_figure.TunePlot`), so the numbers and files are those the
command writes without it. Nothing depends on the process: whenever it cannot be used (not
started, died, failed), :class:`FigureProcess` computes and draws in this process instead.

The child imports only numpy, matplotlib and :mod:`perfsim.report.tune_figure` (scipy when
a quantile needs it), prints nothing, exits when this process sends ``None``, closes the
pipe or dies (``PR_SET_PDEATHSIG``), and leaves quietly on Ctrl-C (the command reports the
interrupt, exit status 130).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

IMPORTS = ("numpy", "matplotlib.figure", "matplotlib.backends.backend_agg",
           "matplotlib.backends.backend_svg", "perfsim.report.tune_figure")
"""What the child imports before it waits: the figure's drawing and its two formats. (scipy,
about 0.12 CPU-s, only if asked for a t quantile :mod:`perfsim.batch.t_table` does not
hold: ``perfsim tune`` asks the child only then.)"""


CLOSE_WAIT_S = 0.1
"""How long :meth:`FigureProcess.close` waits for the child to exit after telling it to
(one waiting for a request exits within milliseconds) before killing it."""


def fork_is_safe() -> bool:
    """Whether this process may fork a child that goes on running Python: only while it
    runs a single Python thread (another thread could hold a lock the child would inherit
    held) and on a platform with ``fork``."""
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods() and threading.active_count() == 1


def worth_starting() -> bool:
    """A figure process pays when there is a core for it next to this process's own work
    and it can be forked (:func:`fork_is_safe`)."""
    from perfsim.batch.executors import cpu_count  # light: the package loads lazily

    return cpu_count() >= 2 and fork_is_safe()


def _serve(conn) -> None:
    """The child: import, then answer each request: ``("t", p, df)`` with ``("t", value)``
    (:func:`~perfsim.batch.stats.t_quantile`), ``("draw", TunePlot, outdir, fid)`` with
    ``("ok", "")`` once both images are written or ``("error", message)``; exit on ``None``,
    on EOF, on Ctrl-C."""
    status = 0
    try:
        from perfsim.batch.executors import _set_pdeathsig

        _set_pdeathsig()
        if os.getppid() == 1:  # the command died before prctl took effect
            os._exit(1)
        import importlib

        from perfsim.batch.executors import paused_gc

        with paused_gc():  # imports: nothing to collect, and nothing to walk later
            for m in IMPORTS:
                importlib.import_module(m)
            from PIL import Image

            Image.preinit()  # the image plugins Pillow loads at its first save (a PNG's)
        from perfsim.batch.stats import t_quantile

        while True:
            job = conn.recv()
            if job is None:
                break
            try:
                if job[0] == "t":
                    conn.send(("t", t_quantile(*job[1:])))
                    continue
                draw_both(*job[1:])
                conn.send(("ok", ""))
            except Exception as exc:  # noqa: BLE001 - reported; the command draws it itself
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, OSError, KeyboardInterrupt):
        status = 1
    finally:
        os._exit(status)  # never return into the command's code, run no exit handlers


class FigureProcess:
    """The parent's end: :meth:`start` forks the child; :meth:`draw` hands it a figure and
    returns a job whose ``wait()`` returns once the PNG and SVG are written (drawing them
    here if the child cannot); :meth:`close` ends the child."""

    def __init__(self) -> None:
        self.proc = None
        self.conn = None
        self.drawing: _Job | None = None
        """The drawing whose answer is awaited (the child answers in order)."""
        self.ahead: _Job | None = None
        """A drawing asked for ahead of the report (:meth:`draw_ahead`), into
        :attr:`scratch`, not yet taken by :meth:`draw`."""
        self.scratch: Path | None = None
        """The temporary directory :meth:`draw_ahead`'s images are written into; removed
        by :meth:`close`."""

    def start(self) -> FigureProcess:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        parent, child = ctx.Pipe()
        sys.stdout.flush()  # nothing buffered is written twice
        sys.stderr.flush()
        proc = ctx.Process(target=_serve, args=(child,), name="perfsim-figures", daemon=True)
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent
        return self

    def draw_ahead(self, plot, fid: str) -> bool:
        """Have the child start drawing ``plot`` (figure ``fid``) now, into a temporary
        directory, before the report's directory exists: ``perfsim tune`` asks this with the
        figure's numbers taken from the search's rows, so that the figure is drawn while
        the analysis and the tables are made. :meth:`draw` takes these images only for an
        equal figure (:func:`~perfsim.report.tune_figure.same_plot`), else it draws anew.
        False (nothing asked) when no child runs or a drawing is already asked for."""
        if self.conn is None or self.drawing is not None or self.ahead is not None:
            return False
        import tempfile

        try:
            self.scratch = Path(tempfile.mkdtemp(prefix="perfsim-tune-figure-"))
        except OSError:  # no temporary directory: the report draws the figure as without
            return False
        try:
            self.conn.send(("draw", plot, str(self.scratch), fid))
        except (OSError, ValueError):
            self._lost()
            return False
        self.drawing = self.ahead = _Job(self, plot, self.scratch, fid)
        return True

    def draw(self, plot, outdir: str | Path, fid: str) -> _Job:
        """Draw ``plot`` into ``outdir/figures/<fid>.png|svg`` in the child if it runs (a
        drawing :meth:`draw_ahead` asked for, of an equal figure, is moved there instead)."""
        ahead, self.ahead = self.ahead, None
        if ahead is not None:
            from perfsim.report.tune_figure import same_plot

            if ahead.fid == fid and same_plot(ahead.plot, plot):
                ahead.into = Path(outdir)  # moved there once written
                return ahead
            ahead.settle()  # another figure: its answer comes first, its files are not used
        if self.conn is not None and self.drawing is None:
            try:
                self.conn.send(("draw", plot, str(outdir), fid))
                self.drawing = _Job(self, plot, outdir, fid)
                return self.drawing
            except (OSError, ValueError):
                self._lost()
        return _Job(None, plot, outdir, fid)

    def t_quantile(self, p: float, df: int) -> float:
        """:func:`perfsim.batch.stats.t_quantile` computed by the child (which imported
        scipy while this process did not need it), or here when the child cannot answer:
        the same value either way."""
        if self.conn is not None and self.drawing is None:
            try:
                self.conn.send(("t", p, df))
                kind, value = self.conn.recv()
                if kind == "t":
                    return value
            except (EOFError, OSError, ValueError):
                pass
            self._lost()
        from perfsim.batch.stats import t_quantile

        return t_quantile(p, df)

    def done(self) -> None:
        """Nothing more will be asked: tell the child to exit now, without waiting for it
        (:meth:`close`, later, finds it gone rather than waits while it ends)."""
        if self.conn is not None and self.drawing is None:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self._lost()

    def _lost(self) -> None:
        """The child is gone or broken: stop using it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Tell the child to exit; one still importing (the command stopped early: bad
        input, Ctrl-C) is killed rather than waited for. It has nothing to clean up: it
        writes only the images of a drawing, which :meth:`_Job.wait` has waited for, or
        of one asked for ahead, in :attr:`scratch`, removed here once the child is gone."""
        if self.conn is not None:
            try:
                self.conn.send(None)
            except (OSError, ValueError):
                pass
            self._lost()
        if self.proc is not None:
            self.proc.join(timeout=CLOSE_WAIT_S)
            if self.proc.is_alive():
                self.proc.kill()
                self.proc.join()
            self.proc = None
        if self.scratch is not None:
            import shutil

            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> FigureProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Job:
    """A figure being drawn by a figure process (``owner``) into ``outdir``, or to be drawn
    here; a drawing asked for ahead (:meth:`FigureProcess.draw_ahead`) is moved into the
    directory ``into`` once written."""

    def __init__(self, owner: FigureProcess | None, plot, outdir, fid: str) -> None:
        self.owner, self.plot, self.outdir, self.fid = owner, plot, outdir, fid
        self.into: Path | None = None

    def settle(self) -> bool:
        """Wait for the child's answer to this drawing, if it is the one awaited: True if
        the child wrote the images (else the child is no longer used)."""
        owner = self.owner
        if owner is not None and owner.conn is not None and owner.drawing is self:
            owner.drawing = None
            try:
                status, _ = owner.conn.recv()
                if status == "ok":
                    return True
            except (EOFError, OSError):
                pass
            owner._lost()
        return False

    def wait(self) -> str:
        """Return once the images are written (into ``into`` for a drawing asked for ahead):
        ``"process"`` if the child drew them, else ``"here"`` (drawn in this process, as
        without a figure process)."""
        if self.settle():
            if self.into is not None:
                from perfsim.report.tune_figure import image_paths

                (self.into / "figures").mkdir(exist_ok=True)
                for rel in image_paths(self.fid):
                    _move(Path(self.outdir) / rel, self.into / rel)
            return "process"
        draw_here(self.plot, self.into or self.outdir, self.fid)
        return "here"


def _move(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst``, or copy it where they are on different file systems."""
    try:
        os.replace(src, dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)
        src.unlink()


def draw_both(plot, outdir: str | Path, fid: str) -> None:
    """Draw ``plot`` once, then write its SVG in a forked copy of this process while this
    one writes its PNG (the two renderings take about the same time; each reads the drawn
    figure as it stands, so the files are those :func:`draw_here` writes). Should the copy
    fail, this process writes the SVG too."""
    from perfsim.report.tune_figure import close, draw_tune, save_png, save_svg

    (Path(outdir) / "figures").mkdir(exist_ok=True)
    fig = draw_tune(plot)
    pid = os.fork()
    if pid == 0:  # the copy: the SVG, then exit without running any of this process's code
        ok = False
        try:
            save_svg(fig, outdir, fid)
            ok = True
        finally:
            os._exit(0 if ok else 1)
    try:
        save_png(fig, outdir, fid)
    finally:
        _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        save_svg(fig, outdir, fid)
    close(fig)


def draw_here(plot, outdir: str | Path, fid: str) -> None:
    """Draw ``plot``'s PNG and SVG in this process."""
    from perfsim.report.tune_figure import draw_tune, save_images

    save_images(draw_tune(plot), outdir, fid)
