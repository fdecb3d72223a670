"""Check a written report in a real headless browser (Chromium, DevTools protocol over
``--remote-debugging-pipe``; no extra Python packages).

:func:`check_report` loads ``index.html`` from a ``file://`` URL in a fresh profile and
returns whether it rendered, how many images it has, which did not load
(``naturalWidth == 0``), and every console error, uncaught exception and failed resource
load the browser logged.

Install on Debian/Ubuntu: ``apt-get install -y chromium`` (``/usr/bin/chromium``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from perfsim.errors import PerfsimError

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--disable-extensions", "--mute-audio",
         "--remote-debugging-pipe")

_PROBE = """(() => {
  const imgs = Array.from(document.images);
  return JSON.stringify({
    title: document.title,
    ready: document.readyState,
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.alt || i.src.slice(0, 60)),
    tables: document.querySelectorAll('table').length,
    findings: document.querySelectorAll('.findings li').length,
    cites: document.querySelectorAll('a.cite').length,
    dangling: Array.from(document.querySelectorAll('a.cite')).filter(
        a => !document.getElementById(a.getAttribute('href').slice(1))).length,
  });
})()"""


def find_chromium() -> str | None:
    env = os.environ.get("PERFSIM_CHROMIUM")
    if env and Path(env).exists():
        return env
    for c in CANDIDATES:
        p = shutil.which(c)
        if p:
            return p
    return None


class _Pipe:
    """A minimal DevTools-protocol client: NUL-terminated JSON messages on fds 3/4."""

    def __init__(self, exe: str, profile: str):
        r_in, w_in = os.pipe()    # we write → browser reads on fd 3
        r_out, w_out = os.pipe()  # browser writes on fd 4 → we read

        def child_fds():
            import fcntl

            a = fcntl.fcntl(r_in, fcntl.F_DUPFD, 10)  # out of the way of 3 and 4 first
            b = fcntl.fcntl(w_out, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)
            os.set_inheritable(3, True)
            os.set_inheritable(4, True)

        self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=child_fds,
                                     close_fds=False)
        # close_fds=False: the pipe ends are non-inheritable (PEP 446), so only the dup2'ed
        # fds 3 and 4 reach the browser.
        os.close(r_in)
        os.close(w_out)
        self.w = os.fdopen(w_in, "wb", buffering=0)
        self.r = os.fdopen(r_out, "rb", buffering=0)
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        try:
            self.w.write(json.dumps(msg).encode() + b"\0")
        except BrokenPipeError:
            raise RuntimeError(f"the browser exited (status {self.proc.poll()})") from None
        want = self.next_id
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == want:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from the browser")
            ready, _, _ = select.select([self.r], [], [], left)
            if ready:
                chunk = os.read(self.r.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError("the browser closed the DevTools pipe")
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - best effort
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.w.close()
        self.r.close()


def check_report(path: str | Path, *, timeout: float = 60.0) -> dict:
    """Render ``path`` (a report directory or an HTML file) in headless Chromium."""
    exe = find_chromium()
    if exe is None:
        raise PerfsimError("no Chromium found (apt-get install -y chromium, or set "
                           "PERFSIM_CHROMIUM)")
    p = Path(path)
    html = p / "index.html" if p.is_dir() else p
    if not html.is_file():
        raise PerfsimError(f"{html}: no such report file")
    url = html.resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="perfsim-chromium-") as profile:
        b = _Pipe(exe, profile)
        try:
            targets = b.send("Target.getTargets")["targetInfos"]
            page = next((t for t in targets if t["type"] == "page"), None)
            if page is None:
                page = {"targetId": b.send("Target.createTarget", {"url": "about:blank"})[
                    "targetId"]}
            sid = b.send("Target.attachToTarget", {"targetId": page["targetId"],
                                                   "flatten": True})["sessionId"]
            for dom in ("Page", "Runtime", "Log"):
                b.send(f"{dom}.enable", session=sid)
            b.events.clear()
            b.send("Page.navigate", {"url": url}, session=sid)
            b.wait_event("Page.loadEventFired", timeout)
            time.sleep(0.3)  # let late console messages arrive
            probe = b.send("Runtime.evaluate", {"expression": _PROBE, "returnByValue": True},
                           session=sid)
            info = json.loads(probe["result"]["value"])
            errors = []
            for e in b.events:
                m, prm = e.get("method"), e.get("params", {})
                if m == "Runtime.consoleAPICalled" and prm.get("type") in ("error", "assert"):
                    errors.append("console: " + " ".join(str(a.get("value", a.get(
                        "description", ""))) for a in prm.get("args", [])))
                elif m == "Runtime.exceptionThrown":
                    errors.append("exception: " + prm.get("exceptionDetails", {}).get("text", ""))
                elif m == "Log.entryAdded" and prm.get("entry", {}).get("level") == "error":
                    errors.append("log: " + prm["entry"].get("text", ""))
        finally:
            b.close()
    ok = (info["ready"] == "complete" and not info["broken"] and not errors
          and info["dangling"] == 0)
    return {"ok": ok, "url": url, "browser": exe, **info, "console_errors": errors}
