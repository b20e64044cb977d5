"""Which clears and writes were sent for which config version, kept across restarts.

A request that clears or writes (enabled by a signed update, agent/diagnostics/config.py) is
sent once per config version, not on its period: a clear repeated every period would erase
every code as soon as it is set, and one repeated at every start of the agent (every
ignition cycle on many vehicles) nearly as often. So the version it was answered for is
kept in `[state] directory`/diagnostics/writes.json, by request name, and a request is due
only while that is below the running version. A rollback to an older version does not send
it again either; a new signed version that keeps the request does.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

from agent.runtime.files import atomic_write

log = logging.getLogger(__name__)


class WriteLedger:
    def __init__(self, state_directory: Path, version: int) -> None:
        self.version = version
        self._path = state_directory / "diagnostics" / "writes.json"
        self._lock = threading.Lock()  # a process may run one poller per bus

    def due(self, request: str) -> bool:
        """Whether `request` was not yet answered for this config version (or a later one)."""
        done = self._read()
        return done is not None and done.get(request, 0) < self.version

    def record(self, request: str) -> None:
        """`request` was answered (positively or not) for this config version."""
        with self._lock:
            done = self._read() or {}
            done[request] = max(self.version, done.get(request, 0))
            self._path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self._path, json.dumps(done, sort_keys=True).encode())

    def _read(self) -> dict[str, int] | None:
        """By request name, the version each was answered for; None when the file is
        damaged: then nothing is known as sent, and nothing is sent rather than repeated."""
        try:
            document = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("%s cannot be read (%s): no clear or write is sent", self._path, exc)
            return None
        if not isinstance(document, dict):
            log.error("%s is damaged: no clear or write is sent", self._path)
            return None
        return {name: version for name, version in document.items()
                if isinstance(version, int)}
