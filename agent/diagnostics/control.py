"""What `diag dtc` and `diag request` get from the running agent (control socket commands).

`dtc` lists the codes each ECU reported last. `request` hands a one-off read to the poller of
the bus it names, so that it is asked within that bus's budget like the periodic requests
(bus etiquette holds for a technician too); only reading services can be asked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from agent.diagnostics.board import BOARD, DtcBoard
from agent.diagnostics.config import OBD_PID, READ_DID, RequestConfig
from agent.diagnostics.dtcs import describe, state
from agent.diagnostics.pids import PIDS
from agent.errors import AgentError

ANSWER_WAIT = 4.0  # s: inside the control socket's reply timeout (agent/runtime/control.py)


def dtc_document(board: DtcBoard = BOARD) -> dict[str, Any]:
    now = time.time()
    return {"ecus": [{"request": report.request, "bus": report.bus,
                      "age_s": round(max(0.0, now - report.time), 1),
                      "codes": [{"code": code, "status": status, "state": state(status),
                                 "description": describe(code) or None}
                                for code, status in sorted(report.codes.items())]}
                     for report in board.reports()],
            "buses": board.buses()}


def one_off(args: Mapping[str, Any], board: DtcBoard = BOARD) -> dict[str, Any]:
    """The answer, or {"error": why} for a request that could not be asked (a technician's
    mistake is an answer, not a failure of the agent)."""
    try:
        return _one_off(args, board)
    except AgentError as exc:
        return {"bus": args.get("bus"), "error": str(exc)}


def _one_off(args: Mapping[str, Any], board: DtcBoard) -> dict[str, Any]:
    from agent.diagnostics.poller import PlannedRequest

    bus = str(args.get("bus", ""))
    poller = board.poller(bus)
    if poller is None:
        known = ", ".join(board.buses()) or "none"
        raise AgentError(f"no diagnostics run on bus {bus!r} (buses with "
                         f"[[diagnostics.requests]]: {known})")
    request = _request(args, bus)
    item = (PIDS.get(request.pid) if request.service == OBD_PID and request.pid is not None
            else poller.item_for_did(request.did) if request.did is not None else None)
    future = poller.submit(PlannedRequest(request, item))
    try:
        answer = future.result(timeout=ANSWER_WAIT)
    except FutureTimeout as exc:
        raise AgentError(f"bus {bus}: no turn for the request within {ANSWER_WAIT:g} s "
                         "(the bus's request budget is spent)") from exc
    text = answer.raw.decode("ascii", "replace") if answer.raw.isascii() else None
    return {"bus": bus, "service": request.service, "did": request.did, "pid": request.pid,
            "request_id": request.request_id, "response_id": request.response_id,
            "raw": answer.raw.hex(), "text": text if text and text.isprintable() else None,
            "values": answer.values, "error": answer.error or None}


def _request(args: Mapping[str, Any], bus: str) -> RequestConfig:
    did, pid = args.get("did"), args.get("pid")
    if (did is None) == (pid is None):
        raise AgentError("give one of did or pid")
    try:
        ids = {key: int(args[key]) for key in ("request_id", "response_id") if key in args}
        if pid is not None:
            return RequestConfig("one-off", bus, OBD_PID, pid=int(pid), **ids)
        return RequestConfig("one-off", bus, READ_DID, did=int(did), **ids)
    except (TypeError, ValueError) as exc:
        raise AgentError(f"not a number: {exc}") from exc
