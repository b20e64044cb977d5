"""Trouble-code changes as events: a code new, cleared, or pending turned confirmed.

The diagnostics sources read the codes (agent/diagnostics/poller.py) and the board keeps what
changed (agent/diagnostics/board.py); at each tick this detector takes the changes and
reports each one with its code (P0301), status byte and state, and a description where
the agent knows one. The first read of an ECU reports the codes it holds as new.
"""

from __future__ import annotations

from agent.diagnostics.board import BOARD, DtcBoard
from agent.diagnostics.dtcs import describe
from agent.events.model import Event, Readings


class DtcDetector:
    name = "dtc"

    def __init__(self, board: DtcBoard = BOARD) -> None:
        self._board = board

    @property
    def inputs(self) -> tuple[str, ...]:
        return ()

    def step(self, now: Readings) -> list[Event]:
        events = []
        for at, change in self._board.take_changes():
            data = {"code": change.code, "change": change.change, "state": change.state,
                    "status": change.status, "ecu": change.request}
            if description := describe(change.code):
                data["description"] = description
            events.append(Event("dtc", round(at * 1000), "technical", data))
        return events
