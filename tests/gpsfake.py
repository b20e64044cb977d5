"""A real gpsd fed by gpsfake on a free loopback port (Debian gpsd-clients)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from types import TracebackType

from tests.support import require_tool

SENTENCE_DELAY = 0.1  # gpsfake -c: with 0 clients get no TPV at all (ENVIRONMENT.md)


class GpsFake:
    """gpsfake replaying `log` once (`-1`), then lingering `linger` s; or cycling it forever."""

    def __init__(self, log: Path, port: int, *, once: bool = True, linger: int = 2) -> None:
        self.command = [require_tool("gpsfake"), "-q", "-c", str(SENTENCE_DELAY),
                        "-P", str(port), *(["-1", "-W", str(linger)] if once else []), str(log)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> GpsFake:
        # Its own session, so that stopping it also stops the gpsd it started.
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait(self, timeout: float) -> None:
        assert self.process is not None
        self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it ended by itself
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> GpsFake:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
