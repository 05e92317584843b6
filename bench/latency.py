"""The latency regime's proxy, in a process of its own so its CPU is counted apart from every tool's.

By default it is the fault proxy of the reliability work (``tests/fault_proxy.py``, ``FaultProxy``)
with every fault rate at 0 and ``latency`` seconds added to each request; when that file is not
there (or ``--proxy relay``), ``bench/relay.py`` adds the same latency. In front of an HTTPS server it
is always ``bench/relay.py``, a byte-level relay that adds the latency per client turn (the TLS bytes
are opaque to it; see its docstring).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAULT_PROXY = REPO / "tests" / "fault_proxy.py"

_FAULT_LAUNCHER = textwrap.dedent("""
    import inspect, json, sys
    sys.path.insert(0, {tests!r})
    from fault_proxy import FaultProxy
    params = inspect.signature(FaultProxy).parameters
    kwargs = {{"latency": {latency!r}}}
    if "seed" in params:
        kwargs["seed"] = 0
    if "rates" in params:
        kwargs["rates"] = {{}}
    with FaultProxy({upstream!r}, **kwargs) as proxy:
        print(proxy.url, flush=True)
        for line in sys.stdin:  # until the benchmark closes the pipe
            print(json.dumps({{"requests": proxy.requests}}), flush=True)
""")


def fault_proxy_available() -> bool:
    return FAULT_PROXY.is_file()


class LatencyProxy:
    def __init__(self, upstream: str, latency: float, kind: str = "auto", log: Path | None = None) -> None:
        if upstream.startswith("https:"):
            kind = "relay"  # the fault proxy speaks plain HTTP only
        elif kind == "auto":
            kind = "fault" if fault_proxy_available() else "relay"
        if kind == "fault" and not fault_proxy_available():
            raise RuntimeError(f"{FAULT_PROXY} does not exist; use --proxy relay")
        self.kind = kind
        self.upstream = upstream
        self.latency = latency
        self.log = log
        self.url: str | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def __enter__(self) -> LatencyProxy:
        if self.kind == "fault":
            code = _FAULT_LAUNCHER.format(tests=str(FAULT_PROXY.parent), latency=self.latency, upstream=self.upstream)
            cmd = [sys.executable, "-c", code]
        else:
            cmd = [sys.executable, "-m", "bench.relay", self.upstream, "--latency", str(self.latency)]
        err = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, cwd=REPO, start_new_session=True
        )
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("http"):
            self.__exit__()
            raise RuntimeError(f"the {self.kind} proxy did not start (said {line!r}); see {self.log}")
        self.url = line
        return self

    def stats(self) -> dict:
        """Counters so far: ``requests`` (None over TLS), and from the relay ``turns`` and ``connections``."""
        if self.proc is None:
            return {}
        try:
            self.proc.stdin.write(b"stats\n")
            self.proc.stdin.flush()
            return dict(json.loads(self.proc.stdout.readline()))
        except (OSError, ValueError):
            return {}

    def requests(self) -> int | None:
        """Requests the proxy has received so far (None when it cannot tell: TLS)."""
        value = self.stats().get("requests")
        return int(value) if value is not None else None

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self.proc = None
