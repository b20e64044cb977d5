"""One bus's requests, asked in turn with bus etiquette; answers become readings.

Etiquette, per bus: at most `budget` requests a second (a token bucket: a burst of one
second's worth, then the rate); a request is never sent again before its period; an ECU
that answers "busy" (NRC 0x21) is asked again after a back-off that doubles from half a
second; one that refuses (any other NRC) or does not answer is asked again after its period
doubled per failure in a row, up to `backoff_max`. "Response pending" (NRC 0x78) is waited
out by udsoncan (P2* instead of P2) and counted. Every outcome is counted in the source's
health: requests, responses, negative (and negative.0xNN by code), busy, response_pending,
timeouts; an answer that does not decode counts in decode_errors. Nothing here raises into
the source's thread for an ECU's behaviour.

A request that clears or writes (only a signed update's, agent/diagnostics/config.py) is
sent once per config version, when the ledger (agent/diagnostics/writes.py) says it is due,
never on its period. An answer, positive or negative, ends it for this version; a timeout or
a busy ECU is retried with the back-off above (the ECU said nothing definite; a clear or a
write of the same record is harmless twice). Each outcome is logged and counted in writes,
writes_positive, writes_negative, writes_timeouts. After a positive clear the same ECU's
trouble codes are read at once, so the cleared codes become `dtc` events; a clear waits for
a first read of the same ECU's codes when the config reads them, so that what it erases is on
record. One-off reads (`submit`) are never a clear or a write.

The poller runs on its diagnostics source's own thread and its own socket: the listening
sources never wait for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import can
from udsoncan.client import Client
from udsoncan.common.DidCodec import DidCodec
from udsoncan.exceptions import (
    InvalidResponseException,
    NegativeResponseException,
    TimeoutException,
    UnexpectedResponseException,
)

from agent.diagnostics import items as data_items
from agent.diagnostics.board import BOARD, DtcBoard, DtcReport
from agent.diagnostics.config import (
    CLEAR_DTC,
    FUNCTIONAL_ID,
    OBD_PID,
    READ_DID,
    READ_DTC,
    WRITE_DID,
    DiagnosticsConfig,
    RequestConfig,
)
from agent.diagnostics.dtcs import code_name
from agent.diagnostics.items import DataItem
from agent.diagnostics.obd import ObdCurrentData
from agent.diagnostics.transport import Connector
from agent.diagnostics.writes import WriteLedger
from agent.errors import AgentError
from agent.sources.base import Reading
from agent.sources.health import SourceHealth

log = logging.getLogger(__name__)
# udsoncan logs every request (INFO) and every negative response (WARNING), can-isotp every
# stray flow-control frame: once a period per request, in the journal. Each outcome is
# counted instead, and the poller logs a request's first failure of a kind and its recovery.
for _name in ("UdsClient", "Connection", "isotp"):
    logging.getLogger(_name).setLevel(logging.ERROR)

BUSY_BACKOFF = 0.5  # s before asking a busy ECU again, doubled each time it is still busy
IDLE_EVERY = 0.25  # s: the source reports its time at least this often (event time moves on)
NRC_BUSY = 0x21
NRC_PENDING = 0x78
NEVER = float("inf")  # the due time of a clear or write that is done (or not allowed)


@dataclass(frozen=True)
class PlannedRequest:
    """A request and the item that reads its answer (None for trouble codes)."""

    config: RequestConfig
    item: DataItem | None

    def quantities(self) -> list[str]:
        if self.config.writes:  # a clear or a write delivers no value
            return []
        if self.item is None:
            return [dtc_count_quantity(self.config.name)]
        return list(self.item.quantities())


def dtc_count_quantity(request: str) -> str:
    return f"{request}_dtcs"


@dataclass(frozen=True)
class Answer:
    """What one request gave: values by quantity, trouble codes, or why it gave nothing."""

    request: str
    values: dict[str, float]
    codes: dict[str, int] | None = None
    error: str = ""
    raw: bytes = b""


class _Schedule:
    """When each request is due, and its failures in a row (back-off)."""

    def __init__(self, requests: Sequence[PlannedRequest], now: float,
                 ledger: WriteLedger | None) -> None:
        self.due = {r.config.name: now if not r.config.writes
                    or (ledger is not None and ledger.due(r.config.name)) else NEVER
                    for r in requests}
        # Clears held until the same ECU's codes were read once: the codes they erase are
        # on record first, and the read after the clear reports each of them `cleared`.
        readers = {_ids(r.config) for r in requests if r.config.service == READ_DTC}
        self.held = {r.config.name for r in requests if r.config.service == CLEAR_DTC
                     and self.due[r.config.name] != NEVER and _ids(r.config) in readers}
        for name in self.held:
            self.due[name] = NEVER
        self.failures = {r.config.name: 0 for r in requests}
        self.busy = {r.config.name: 0 for r in requests}


class Poller:
    def __init__(self, bus: str, requests: Sequence[PlannedRequest], config: DiagnosticsConfig,
                 connector: Connector, health: SourceHealth,
                 ignition_on: Callable[[], bool] | None = None,
                 board: DtcBoard = BOARD, ledger: WriteLedger | None = None) -> None:
        self.bus = bus
        self._ledger = ledger  # None: no clear or write is ever sent
        self._board = board
        self._requests = {r.config.name: r for r in requests}
        self._config = config
        self._connector = connector
        self._health = health
        self._ignition_on = ignition_on
        self._clients: dict[tuple[int, int], Client] = {}
        self._one_off: queue.Queue[tuple[PlannedRequest, Future[Answer]]] = queue.Queue()
        self._errors: dict[str, str] = {}  # each request's last error, for the log
        self._tokens = max(1.0, config.budget)
        self._refilled = time.monotonic()
        for name in ("requests", "responses", "negative", "busy", "response_pending",
                     "timeouts", "deferred", "writes", "writes_positive", "writes_negative",
                     "writes_timeouts"):
            health.state.setdefault(name, 0)
        # A gauge: 1 when the kernel's ISO-TP sockets carry the requests, 0 for can-isotp.
        health.state["kernel_isotp"] = int(connector.kernel)

    def item_for_did(self, did: int) -> DataItem | None:
        return self._dids().get(did)

    def submit(self, request: PlannedRequest) -> Future[Answer]:
        """A one-off read (`diag request`), asked within this bus's budget, before the next
        periodic one. Never a clear or a write: those come only from a signed config."""
        if request.config.writes:
            raise AgentError(f"{request.config.service}: a one-off request only reads")
        future: Future[Answer] = Future()
        self._one_off.put((request, future))
        return future

    def run(self, emit: Callable[[list[Reading]], None], on_idle: Callable[[float], None],
            stop: threading.Event) -> None:
        schedule = _Schedule(list(self._requests.values()), time.monotonic(), self._ledger)
        self._board.add_poller(self.bus, self)
        log.info("diagnostics on %s: %d requests", self._connector.description,
                 len(self._requests))
        try:
            while not stop.is_set():
                on_idle(time.time())
                one_off = not self._one_off.empty()
                due = None if one_off else self._next_due(schedule)
                if not one_off and due is None:
                    self._wait(schedule, stop)
                    continue
                if not self._take_token(stop):
                    continue
                request, future = self._one_off.get_nowait() if one_off else (due, None)
                answer = self.ask(request)
                if future is not None:
                    future.set_result(answer)
                    continue
                self._reschedule(schedule, request, answer)
                if request.config.writes:
                    self._after_write(schedule, request, answer)
                    continue
                self._log_change(request.config.name, answer.error)
                if answer.codes is not None:
                    self._release_clears(schedule, request)
                if answer.values:
                    now = time.time()
                    emit([Reading(now, name, value) for name, value in answer.values.items()])
        finally:
            self._board.remove_poller(self.bus, self)
            self.close()

    def _log_change(self, name: str, error: str) -> None:
        previous = self._errors.get(name, "")
        if error and error != previous:
            log.warning("%s: request %s: %s (counted; further ones are not logged)",
                        self.bus, name, error)
        elif previous and not error:
            log.info("%s: request %s answers again", self.bus, name)
        self._errors[name] = error

    def _release_clears(self, schedule: _Schedule, read: PlannedRequest) -> None:
        for name in list(schedule.held):
            if _ids(self._requests[name].config) == _ids(read.config):
                schedule.held.discard(name)
                schedule.due[name] = time.monotonic()

    def _after_write(self, schedule: _Schedule, request: PlannedRequest,
                     answer: Answer) -> None:
        config, state = request.config, self._health.state
        what = (f"{self.bus}: request {config.name} ({config.service}, config version "
                f"{self._ledger.version if self._ledger else '?'})")
        state["writes"] += 1
        if answer.error == "busy" or answer.error == "timeout" \
                or answer.error.startswith("bus failed"):
            if answer.error != "busy":  # busy is counted in `busy`; no answer is here
                state["writes_timeouts"] += 1
            log.warning("%s: %s; asked again after a back-off", what, answer.error)
            return  # _reschedule set the back-off
        schedule.due[config.name] = NEVER  # answered: done for this config version
        if self._ledger is not None:
            try:
                self._ledger.record(config.name)
            except OSError as exc:  # done in this run all the same; a restart may resend it
                log.error("%s: cannot remember that it was sent (%s)", what, exc)
        if answer.error:
            state["writes_negative"] += 1
            log.warning("%s: %s; not sent again for this version", what, answer.error)
            return
        state["writes_positive"] += 1
        log.warning("%s: done (positive response)", what)
        if config.service == CLEAR_DTC:  # the cleared codes become events at once
            for other in self._requests.values():
                if other.config.service == READ_DTC and _ids(other.config) == _ids(config):
                    schedule.due[other.config.name] = time.monotonic()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        self._connector.close()

    def _take_token(self, stop: threading.Event) -> bool:
        now = time.monotonic()
        budget = self._config.budget
        self._tokens = min(max(1.0, budget), self._tokens + (now - self._refilled) * budget)
        self._refilled = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._health.state["deferred"] += 1  # a due request waits for the budget
        stop.wait(min(IDLE_EVERY, (1 - self._tokens) / budget))
        return False

    def _next_due(self, schedule: _Schedule) -> PlannedRequest | None:
        now = time.monotonic()
        ignition = self._ignition_on() if self._ignition_on is not None else True
        due = [(at, name) for name, at in schedule.due.items() if at <= now
               and (ignition or self._requests[name].config.when_ignition_off)]
        return self._requests[min(due)[1]] if due else None

    def _wait(self, schedule: _Schedule, stop: threading.Event) -> None:
        now = time.monotonic()
        soonest = min(schedule.due.values(), default=now + IDLE_EVERY)
        if self._one_off.empty():
            stop.wait(min(IDLE_EVERY, max(0.0, soonest - now)) or 0.01)

    def _reschedule(self, schedule: _Schedule, request: PlannedRequest, answer: Answer) -> None:
        name, period = request.config.name, request.config.period
        now = time.monotonic()
        if not answer.error:
            schedule.failures[name] = schedule.busy[name] = 0
            schedule.due[name] = now + period
        elif answer.error == "busy":
            delay = BUSY_BACKOFF * 2 ** schedule.busy[name]
            schedule.busy[name] += 1
            schedule.due[name] = now + min(delay, self._config.backoff_max)
        else:
            schedule.failures[name] += 1
            delay = period * 2 ** min(schedule.failures[name], 16)
            schedule.due[name] = now + min(delay, max(period, self._config.backoff_max))

    def ask(self, request: PlannedRequest) -> Answer:
        """Send one request and wait for its answer (on this poller's thread)."""
        config = request.config
        state = self._health.state
        state["requests"] += 1
        try:
            client = self._client(config)
            answer = self._exchange(client, request)
        except NegativeResponseException as exc:
            code = exc.response.code
            key = f"negative.0x{code:02X}"
            state["negative"] += 1
            state[key] = state.get(key, 0) + 1
            if code == NRC_BUSY:
                state["busy"] += 1
                return Answer(config.name, {}, error="busy")
            return Answer(config.name, {}, error=f"negative response 0x{code:02X} "
                                                 f"({exc.response.code_name})")
        except TimeoutException:
            state["timeouts"] += 1
            return Answer(config.name, {}, error="timeout")
        except (InvalidResponseException, UnexpectedResponseException,
                data_items.DecodeError) as exc:
            self._health.decode_errors += 1
            return Answer(config.name, {}, error=f"invalid answer: {exc}")
        except (OSError, can.CanError) as exc:  # the bus or an ISO-TP socket failed:
            # reopened at the request's next turn
            self._health.reconnects += 1
            self._drop_client(config)
            return Answer(config.name, {}, error=f"bus failed: {exc}")
        state["responses"] += 1
        return answer

    def _exchange(self, client: Client, request: PlannedRequest) -> Answer:
        config = request.config
        if config.service == READ_DTC:
            response = client.get_dtc_by_status_mask(config.status_mask)
            assert response is not None
            codes = {code_name(dtc.id): dtc.status.get_byte_as_int()
                     for dtc in response.service_data.dtcs}
            self._board.report(DtcReport(config.name, self.bus, time.time(), codes))
            return Answer(config.name, {dtc_count_quantity(config.name): len(codes)},
                          codes=codes)
        if config.service == CLEAR_DTC:
            client.clear_dtc(config.group)
            return Answer(config.name, {})
        if config.service == WRITE_DID:
            assert config.did is not None
            client.config["data_identifiers"].setdefault(config.did, _RawCodec())
            client.write_data_by_identifier(config.did, bytes.fromhex(config.data))
            return Answer(config.name, {})
        if config.service == OBD_PID:
            assert config.pid is not None
            response = client.send_request(ObdCurrentData.make_request(config.pid))
            assert response is not None
            data = ObdCurrentData.interpret_response(response, config.pid)
        elif config.service == READ_DID:
            assert config.did is not None
            # A one-off read may name a DID no periodic request reads.
            client.config["data_identifiers"].setdefault(config.did, _RawCodec())
            response = client.read_data_by_identifier(config.did)
            assert response is not None
            data = response.service_data.values[config.did]
        else:
            raise AssertionError(f"not a known service: {config.service}")
        if request.item is None:  # a one-off read of something no catalogue describes
            return Answer(config.name, {}, raw=data)
        return Answer(config.name, data_items.decode(request.item, data), raw=data)

    def _client(self, config: RequestConfig) -> Client:
        key = _ids(config)
        client = self._clients.get(key)
        if client is None:
            client = Client(self._connector.connection(*key), config=self._client_config())
            client.open()
            self._clients[key] = client
        return client

    def _drop_client(self, config: RequestConfig) -> None:
        client = self._clients.pop(_ids(config), None)
        if client is not None:
            client.close()

    def _client_config(self) -> dict[str, Any]:
        from udsoncan.configs import default_client_config

        diag = self._config
        # One DID per request, read whole as raw bytes: `items.decode` checks the length
        # (saying what it expected) and scales them.
        dids = {did: _RawCodec() for did in self._dids()}
        return {**default_client_config, "data_identifiers": dids,
                "p2_timeout": diag.timeout, "p2_star_timeout": diag.pending_timeout,
                "request_timeout": diag.timeout + 4 * diag.pending_timeout,
                "use_server_timing": False, "nrc78_callback": self._pending}

    def _dids(self) -> dict[int, DataItem]:
        return {r.config.did: r.item for r in self._requests.values()
                if r.config.service == READ_DID and r.config.did is not None
                and r.item is not None}

    def _pending(self) -> None:
        self._health.state["response_pending"] += 1


def _ids(config: RequestConfig) -> tuple[int, int]:
    request_id = FUNCTIONAL_ID if config.addressing == "functional" else config.request_id
    return request_id, config.response_id


class _RawCodec(DidCodec):
    """A udsoncan DID codec that hands the whole record over as it is, both ways (a write's
    record is the request's `data`, checked by the loader)."""

    def encode(self, *values: Any) -> bytes:
        return bytes(values[0])

    def decode(self, payload: bytes) -> bytes:
        return bytes(payload)

    def __len__(self) -> int:
        raise DidCodec.ReadAllRemainingData
