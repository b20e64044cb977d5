"""Active diagnostics as a source: the requests of one bus, polled on their own socket.

Not written as a [[sources]] entry: the config loader makes one for every bus that
[[diagnostics.requests]] name, called `<bus>.diag`, so its signals are
`<bus>.diag.<quantity>` (`can0.diag.engine_speed`, `can0.diag.cell_voltage_3`) and its health
counters `<bus>.diag.requests`, `.timeouts`, ... It is a value source: its catalogue is what
its requests' items deliver, and they flow through sampling, privacy, batches and events as
gpsd's readings do. Read-only, except a clear or a write that a signed update's own request
enables (`allow_write`, checked here with `writes_allowed`; agent/diagnostics/config.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.source import SourceConfig
from agent.diagnostics.config import (
    ALL_GROUPS,
    ENABLEABLE_WRITES,
    OBD_PID,
    READ_DID,
    READ_SERVICES,
    TRANSPORTS,
    WRITE_DID,
    WRITE_SERVICES,
    DiagnosticsConfig,
    RequestConfig,
    load_catalogue,
)
from agent.diagnostics.items import DataItem
from agent.diagnostics.pids import PIDS
from agent.errors import ConfigError
from agent.sources.base import OnFrames, OnIdle, Source, failure_warning
from agent.sources.catalogue import Catalogue, CatalogueSignal
from agent.sources.health import SourceHealth
from agent.sources.registry import PYTHON_CAN, ErrorAt, SourceType, source_type

if TYPE_CHECKING:
    from agent.diagnostics.poller import PlannedRequest

SUFFIX = ".diag"
# `error(section, key, message)`: the loader's ConfigError naming file and line.
SectionError = Callable[[str, str, str], ConfigError]


@dataclass(frozen=True)
class DiagnosticsSourceConfig(SourceConfig):
    """Made by the loader from [diagnostics] for one bus; not a key of [[sources]]."""

    bus: str = ""
    interface: str = ""
    channel: str = ""
    bitrate: int = 500_000
    settings: DiagnosticsConfig = field(default_factory=DiagnosticsConfig)
    # The item that reads each request's answer, in request order (None: trouble codes).
    items: tuple[DataItem | None, ...] = ()
    # [events] ignition when it is a signal of this bus: "Message.Signal", its DBCs, and the
    # values that mean on (agent/diagnostics/ignition.py); "" when the bus does not carry it.
    ignition: str = ""
    ignition_dbc: tuple[Path, ...] = ()
    ignition_on: tuple[str, ...] = ()
    # For the requests that clear or write: the config version they belong to, and the
    # state folder that remembers which were sent (agent/diagnostics/writes.py).
    version: int = 0
    state_directory: Path | None = None


class DiagnosticsSource(Source):
    def __init__(self, config: DiagnosticsSourceConfig, health: SourceHealth) -> None:
        super().__init__(config.name, health)
        self._config = config

    def run(self, on_frames: OnFrames, on_idle: OnIdle, stop: threading.Event) -> None:
        from agent.diagnostics.ignition import IgnitionWatch
        from agent.diagnostics.poller import Poller
        from agent.diagnostics.transport import BusAddress, Connector
        from agent.diagnostics.writes import WriteLedger

        config = self._config
        address = BusAddress(config.interface, config.channel, config.bitrate)
        watch = None
        if config.ignition:
            message, _, signal = config.ignition.rpartition(".")
            watch = IgnitionWatch(address, config.ignition_dbc, message, signal,
                                  config.ignition_on)
        try:
            ledger = (WriteLedger(config.state_directory, config.version)
                      if config.state_directory is not None else None)
            poller = Poller(config.bus, planned_requests(config), config.settings,
                            Connector(address, config.settings.transport), self.health,
                            ignition_on=watch.on if watch is not None else None,
                            ledger=ledger)
            poller.run(on_frames, on_idle, stop)
        finally:
            if watch is not None:
                watch.close()


def planned_requests(config: DiagnosticsSourceConfig) -> list[PlannedRequest]:
    from agent.diagnostics.poller import PlannedRequest

    return [PlannedRequest(request, item)
            for request, item in zip(config.settings.requests, config.items, strict=True)]


def diagnostics_sources(sources: Sequence[SourceConfig], settings: DiagnosticsConfig,
                        error: SectionError, ignition: str = "",
                        ignition_on: tuple[str, ...] = (), *, writes_allowed: bool = False,
                        version: int = 0, state_directory: Path | None = None
                        ) -> tuple[DiagnosticsSourceConfig, ...]:
    """One source per bus that [[diagnostics.requests]] name, checked; `ignition` is [events]
    ignition (`<bus>.<Message>.<Signal>`), watched on the bus that carries it.
    `writes_allowed`: the requests are a verified signed update's own (merge_update), so
    `allow_write` may enable a clear or a write."""
    if not settings.requests:
        return ()
    _check_settings(settings, error)
    catalogue = (load_catalogue(settings.catalogue) if settings.catalogue is not None
                 else {})
    by_name = {source.name: source for source in sources}
    made = []
    names = [request.name for request in settings.requests]
    for request in settings.requests:
        if names.count(request.name) > 1:
            raise error(_where(request), "name", "request names must be unique")
    for bus in dict.fromkeys(request.bus for request in settings.requests):
        requests = tuple(r for r in settings.requests if r.bus == bus)
        source = by_name.get(bus)
        if source is None or source_type(source.type).name != PYTHON_CAN:
            raise error(_where(requests[0]), "bus", f"{bus!r} is not a CAN bus of "
                        "[[sources]] (a python-can interface such as socketcan or virtual; "
                        "a replay cannot answer requests)")
        items = tuple(_item(request, catalogue, error, writes_allowed)
                      for request in requests)
        _check_quantities(requests, items, error)
        made.append(DiagnosticsSourceConfig(
            name=f"{bus}{SUFFIX}", type="diagnostics", bus=bus,
            interface=source.type, channel=getattr(source, "channel", ""),
            bitrate=getattr(source, "bitrate", 500_000),
            settings=DiagnosticsConfig(**{**settings.__dict__, "requests": requests}),
            # The version only where it matters: a source whose config is unchanged goes on
            # across an update (agent/runtime/daemon.py), so a read-only bus keeps polling,
            # and one with a clear or a write starts again and sends it for the new version.
            items=items, version=version if any(r.writes for r in requests) else 0,
            state_directory=state_directory,
            **_ignition(source, ignition, ignition_on)))
    return tuple(made)


def _ignition(source: SourceConfig, key: str, on_values: tuple[str, ...]) -> dict[str, Any]:
    prefix = f"{source.name}."
    if not key.startswith(prefix) or key.count(".") != 2 or not source.dbc:
        return {}
    return {"ignition": key[len(prefix):], "ignition_dbc": source.dbc,
            "ignition_on": on_values}


def _where(request: RequestConfig) -> str:
    return f"diagnostics.requests.{request.name}"


def _check_settings(settings: DiagnosticsConfig, error: SectionError) -> None:
    for key in ("budget", "timeout", "pending_timeout", "backoff_max"):
        if getattr(settings, key) <= 0:
            raise error("diagnostics", key, "must be a positive number")
    if settings.transport not in TRANSPORTS:
        raise error("diagnostics", "transport", f"{settings.transport!r} is not one of "
                    f"{', '.join(TRANSPORTS)}")


def _item(request: RequestConfig, catalogue: Mapping[int, DataItem], error: SectionError,
          writes_allowed: bool) -> DataItem | None:
    where = _where(request)
    if request.service in WRITE_SERVICES:
        _check_write(request, error, writes_allowed)
    elif request.allow_write or request.data:
        raise error(where, "allow_write" if request.allow_write else "data",
                    f"only for {' and '.join(ENABLEABLE_WRITES)} requests")
    elif request.service not in READ_SERVICES:
        raise error(where, "service", f"{request.service!r} is not one of "
                    f"{', '.join(READ_SERVICES)}")
    if request.addressing not in ("physical", "functional"):
        raise error(where, "addressing", "must be \"physical\" or \"functional\"")
    if request.addressing == "functional" and request.service != OBD_PID:
        raise error(where, "addressing", "functional addressing (0x7DF) is for OBD-II "
                    "PIDs only: UDS requests go to one ECU")
    for key in ("request_id", "response_id"):
        if not 0 <= getattr(request, key) <= 0x7FF:
            raise error(where, key, "must be an 11-bit CAN ID (0x000..0x7FF)")
    if request.period <= 0:
        raise error(where, "period", "must be a positive number of seconds")
    if not 0 <= request.status_mask <= 0xFF:
        raise error(where, "status_mask", "must be a byte (0x00..0xFF)")
    if request.service == OBD_PID:
        if request.pid is None or request.pid not in PIDS:
            raise error(where, "pid", f"give one of the built-in PIDs: "
                        f"{', '.join(f'0x{pid:02X}' for pid in sorted(PIDS))}")
        return PIDS[request.pid]
    if request.service == READ_DID:
        if request.did is None or request.did not in catalogue:
            raise error(where, "did", "give a data identifier of the [diagnostics] "
                        "catalogue (docs/diagnostics.md)")
        return catalogue[request.did]
    return None


def _check_write(request: RequestConfig, error: SectionError, writes_allowed: bool) -> None:
    """A clear or a write: refused unless enabled, by the request's own allow_write, in a
    signed update's requests (docs/diagnostics.md, safety rules)."""
    where, service = _where(request), request.service
    refused = (f"refused: {service} (service 0x{WRITE_SERVICES[service]:02X}) changes the "
               "vehicle; diagnostics is read-only (docs/diagnostics.md, safety rules)")
    if service not in ENABLEABLE_WRITES:
        raise error(where, "service", f"{refused}, and only {' and '.join(ENABLEABLE_WRITES)} "
                    "can be enabled")
    if not request.allow_write:
        raise error(where, "allow_write", f"{refused} unless the request sets allow_write = "
                    "true in a signed OTA config")
    if not writes_allowed:
        raise error(where, "allow_write", f"{refused}: allow_write needs a signed OTA config "
                    "(an update whose own [[diagnostics.requests]] name this request); the "
                    "local config file never enables a clear or a write")
    if request.addressing != "physical":
        raise error(where, "addressing", f"{service} goes to one ECU (physical addressing)")
    if service == WRITE_DID:
        if request.did is None or not 0 <= request.did <= 0xFFFF:
            raise error(where, "did", "give the data identifier to write (0x0000..0xFFFF)")
        try:
            record = bytes.fromhex(request.data)
        except ValueError:
            record = b""
        if not record:
            raise error(where, "data", "give the record to write as hexadecimal bytes "
                        "(\"0A1B\")")
    elif not 0 <= request.group <= ALL_GROUPS:
        raise error(where, "group", "must be a 3-byte DTC group (0x000000..0xFFFFFF)")


def _check_quantities(requests: Sequence[RequestConfig], items: Sequence[DataItem | None],
                      error: SectionError) -> None:
    seen: dict[str, str] = {}
    for request, item in zip(requests, items, strict=True):
        from agent.diagnostics.poller import PlannedRequest

        for quantity in PlannedRequest(request, item).quantities():
            if quantity in seen:
                raise error(_where(request), "name", f"delivers {quantity!r}, which "
                            f"request {seen[quantity]!r} delivers too")
            seen[quantity] = request.name


def _catalogue(config: DiagnosticsSourceConfig) -> Catalogue:
    signals = []
    for request, item in zip(config.settings.requests, config.items, strict=True):
        if request.writes:  # a clear or a write delivers no value
            continue
        if item is None:
            from agent.diagnostics.poller import dtc_count_quantity

            signals.append(CatalogueSignal(dtc_count_quantity(request.name), ""))
            continue
        for name in item.quantities():
            # A spread is a difference: the offset cancels out.
            spread = item.summary and name == f"{item.name}_spread"
            signals.append(CatalogueSignal(name, item.unit, scale=item.scale,
                                           offset=0 if spread else item.offset))
    return tuple(signals)


def _check(config: DiagnosticsSourceConfig, error: ErrorAt) -> None:
    # Called for [[sources]] entries only (the loader makes its own after these checks):
    # one written by hand would carry requests past every check of [[diagnostics.requests]],
    # the refusal of writes included.
    raise error("type", "diagnostics sources are made from [[diagnostics.requests]] "
                "(docs/diagnostics.md), not written as [[sources]]")


def _open(config: DiagnosticsSourceConfig, can_filters: Sequence[dict[str, Any]],
          health: SourceHealth) -> DiagnosticsSource:
    return DiagnosticsSource(config, health)


def _warnings(source: Mapping[str, Any]) -> list[str]:
    name = source["name"]
    found = failure_warning(source, f"diagnostics {name}")
    if source.get("timeouts"):
        found.append(f"diagnostics {name}: {source['timeouts']} requests timed out (ECU "
                     "asleep, wrong IDs, or ignition off?)")
    if source.get("negative"):
        codes = ", ".join(f"{key.split('.', 1)[1]}: {count}" for key, count in source.items()
                          if key.startswith("negative."))
        found.append(f"diagnostics {name}: {source['negative']} negative responses ({codes})")
    if source.get("writes_negative") or source.get("writes_timeouts"):
        found.append(f"diagnostics {name}: clears/writes of the signed config: "
                     f"{source.get('writes_positive', 0)} done, {source['writes_negative']} "
                     f"refused by the ECU, {source['writes_timeouts']} unanswered (see the log)")
    return found


SOURCE_TYPE = SourceType(name="diagnostics", config=DiagnosticsSourceConfig, check=_check,
                         open=_open, where=lambda config: f"{config.channel} (diagnostics)",
                         warnings=_warnings, catalogue=_catalogue)
