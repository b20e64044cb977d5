"""The trouble codes each ECU reported last, and their changes waiting to become events.

Written by the diagnostics sources' threads, read by the event engine at its ticks and by
`diag dtc` through the control socket; one per process, like the running pollers it also
lists (`diag request` hands a one-off read to the poller of the bus it names).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.diagnostics.dtcs import DtcChange, changes

if TYPE_CHECKING:
    from agent.diagnostics.poller import Poller

MAX_WAITING = 1000  # changes kept for the event engine; beyond it the oldest are counted lost


@dataclass(frozen=True)
class DtcReport:
    """What one request (one ECU) reported: code → status byte, at `time` (epoch s)."""

    request: str
    bus: str
    time: float
    codes: Mapping[str, int]


class DtcBoard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: dict[str, DtcReport] = {}
        self._waiting: deque[tuple[float, DtcChange]] = deque()
        self.lost = 0
        self._pollers: dict[str, Poller] = {}

    def report(self, report: DtcReport) -> list[DtcChange]:
        with self._lock:
            previous = self._reports.get(report.request)
            found = changes(report.request, previous.codes if previous else None,
                            report.codes)
            self._reports[report.request] = report
            for change in found:
                if len(self._waiting) >= MAX_WAITING:
                    self._waiting.popleft()
                    self.lost += 1
                self._waiting.append((report.time, change))
        return found

    def take_changes(self) -> list[tuple[float, DtcChange]]:
        with self._lock:
            taken = list(self._waiting)
            self._waiting.clear()
        return taken

    def reports(self) -> list[DtcReport]:
        with self._lock:
            return sorted(self._reports.values(), key=lambda r: r.request)

    def add_poller(self, bus: str, poller: Poller) -> None:
        with self._lock:
            self._pollers[bus] = poller

    def remove_poller(self, bus: str, poller: Poller) -> None:
        with self._lock:
            if self._pollers.get(bus) is poller:
                del self._pollers[bus]

    def poller(self, bus: str) -> Poller | None:
        with self._lock:
            return self._pollers.get(bus)

    def buses(self) -> list[str]:
        with self._lock:
            return sorted(self._pollers)


BOARD = DtcBoard()
