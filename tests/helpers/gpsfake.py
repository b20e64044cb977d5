"""A real gpsd fed by gpsfake on a free loopback port (Debian gpsd-clients)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from devkit.broker import free_port

from tests.helpers.support import require_tool

SENTENCE_DELAY = 0.1  # gpsfake -c: with 0 clients get no TPV at all (ENVIRONMENT.md)
START_TIMEOUT = 20.0
ATTEMPTS = 3  # on ports of its own choosing


class GpsFakeFailed(RuntimeError):
    pass


class GpsFake:
    """gpsfake replaying `log` once (`-1`), then lingering `linger` s; or cycling it forever.

    `start()` returns once gpsd on `port` has greeted a client with its VERSION banner, so a
    test never waits on a gpsd that is not there (gpsfake gave up, or something else holds
    the port). Without a `port` it picks one, and tries a fresh one when a start fails.
    """

    def __init__(self, log: Path, port: int | None = None, *, once: bool = True,
                 linger: int = 2) -> None:
        self._gpsfake = require_tool("gpsfake")
        self._arguments = [*(["-1", "-W", str(linger)] if once else []), str(log)]
        self._fixed_port = port
        self.port = port or 0
        self.process: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None

    def start(self) -> GpsFake:
        failures = []
        for _ in range(1 if self._fixed_port else ATTEMPTS):
            self.port = self._fixed_port or free_port()
            self._launch()
            if self._greeted():
                return self
            failures.append(f"port {self.port}: {self._stop_and_read()}")
        raise GpsFakeFailed("gpsfake's gpsd never answered:\n" + "\n".join(failures))

    def _launch(self) -> None:
        self._output = tempfile.TemporaryFile()  # noqa: SIM115 (kept open until stop())
        command = [self._gpsfake, "-q", "-c", str(SENTENCE_DELAY), "-P", str(self.port),
                   *self._arguments]
        # Its own session, so that stopping it also stops the gpsd it started.
        self.process = subprocess.Popen(command, stdout=self._output, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def _greeted(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as probe:
                if b'"class":"VERSION"' in probe.recv(4096):
                    return True
            time.sleep(0.1)
        return False

    def _stop_and_read(self) -> str:
        assert self.process is not None
        ended = self.process.poll()
        text = self.output()
        self.stop()
        return f"{'running' if ended is None else f'exited {ended}'}: {text}"

    def output(self) -> str:
        """The end of what gpsfake printed so far (for a failing test's message)."""
        if self._output is None:
            return "(stopped)"
        self._output.seek(0)
        return self._output.read().decode(errors="replace").strip()[-1500:] or "(no output)"

    def wait(self, timeout: float) -> None:
        assert self.process is not None
        self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it ended by itself
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # seen once in CI, with gpsd feeding nothing
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None
        if self._output is not None:
            self._output.close()
            self._output = None

    def __enter__(self) -> GpsFake:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
