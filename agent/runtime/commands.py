"""What `edge-agent diag` can ask the running daemon: the control socket's command table.

Each command reads a snapshot (agent/runtime/status.py turns it into the document) or asks the
agent for one of the few things a field technician may change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from agent.diagnostics import control as diagnostics
from agent.runtime import status
from agent.runtime.control import Command
from agent.runtime.status import AgentSnapshot, LatestValue


class Diagnosable(Protocol):
    """What the commands need of the running agent (agent/runtime/daemon.py's `Agent`)."""

    def snapshot(self) -> AgentSnapshot: ...

    def readings(self) -> Mapping[str, Sequence[LatestValue]]: ...

    def queue(self, limit: int) -> dict[str, object]: ...

    def flush(self) -> str: ...

    def reconnect(self) -> str: ...

    def reload(self) -> str: ...

    def set_consent(self, level: str) -> str: ...

    def erase(self) -> dict[str, object]: ...


def command_table(agent: Diagnosable) -> dict[str, Command]:
    return {
        "status": Command(lambda args: status.status(agent.snapshot())),
        "buses": Command(lambda args: status.buses(agent.snapshot(), int(args.get("top", 10)))),
        "signals": Command(lambda args: status.signal_values(
            agent.readings(), agent.snapshot().sources, args.get("glob", "*"))),
        "gps": Command(lambda args: status.gps(agent.snapshot(), agent.readings())),
        "sensors": Command(lambda args: status.sensors(agent.snapshot(), agent.readings())),
        "queue": Command(lambda args: agent.queue(int(args.get("limit", 20)))),
        "flush": Command(lambda args: agent.flush(), changes_state=True),
        "reconnect": Command(lambda args: agent.reconnect(), changes_state=True),
        "reload": Command(lambda args: agent.reload(), changes_state=True),
        "privacy": Command(lambda args: status.privacy(agent.snapshot())),
        "consent": Command(lambda args: agent.set_consent(str(args.get("level", ""))),
                           changes_state=True),
        "erase": Command(lambda args: agent.erase(), changes_state=True),
        # Active diagnostics (agent/diagnostics/): the codes read, and a one-off read.
        "dtc": Command(lambda args: diagnostics.dtc_document()),
        "request": Command(lambda args: diagnostics.one_off(args)),
    }
