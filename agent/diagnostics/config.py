"""[diagnostics] and [[diagnostics.requests]]: what to ask which ECU, how often, how to read it.

Read-only by default: a request names a service, and the reading services are what a config
may ask for. The services that write, clear or act (0x2E, 0x14, 0x31, 0x2F, 0x11) are
recognised by name so that a refusal says why. Two of them, `clear_dtc` (0x14) and
`write_did` (0x2E), can be enabled for one request by `allow_write = true`, and only in the
requests of a verified signed OTA update (agent/config/schema.py's merge_update); such a
request is sent once per config version (agent/diagnostics/writes.py). The others are refused
always.
Light to import: the config loader uses it without loading python-can or udsoncan.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from agent.diagnostics.items import DataItem
from agent.errors import ConfigError

OBD_PID = "obd_pid"  # OBD-II mode 01, current data
READ_DID = "read_did"  # UDS 0x22 ReadDataByIdentifier
READ_DTC = "read_dtc"  # UDS 0x19 ReadDTCInformation, reportDTCByStatusMask
READ_SERVICES = (OBD_PID, READ_DID, READ_DTC)
CLEAR_DTC = "clear_dtc"  # UDS 0x14 ClearDiagnosticInformation
WRITE_DID = "write_did"  # UDS 0x2E WriteDataByIdentifier
# Services that change the vehicle: refused (the name is known so the error can say why),
# except the enableable ones in a signed update's request with allow_write = true.
WRITE_SERVICES = {WRITE_DID: 0x2E, CLEAR_DTC: 0x14, "routine": 0x31, "io_control": 0x2F,
                  "ecu_reset": 0x11}
ENABLEABLE_WRITES = (CLEAR_DTC, WRITE_DID)
ALL_GROUPS = 0xFFFFFF  # clear_dtc's group: every DTC (ISO 14229-1)
FUNCTIONAL_ID = 0x7DF  # OBD-II functional (broadcast) request ID, 11-bit
TRANSPORTS = ("auto", "python", "kernel")


@dataclass(frozen=True)
class RequestConfig:
    """One periodic request ([[diagnostics.requests]])."""

    name: str
    bus: str  # the [[sources]] entry whose bus carries it
    service: str
    pid: int | None = None  # obd_pid
    did: int | None = None  # read_did
    status_mask: int = 0xFF  # read_dtc
    addressing: str = "physical"  # or "functional" (request to 0x7DF)
    request_id: int = 0x7E0
    response_id: int = 0x7E8
    period: float = 10.0
    # Poll while the ignition is off too (a parked EV's battery); off by default: an ECU
    # woken by a request keeps the car's networks awake and drains the 12 V battery.
    when_ignition_off: bool = False
    # clear_dtc / write_did only: the explicit opt-in, honoured only in a signed update.
    allow_write: bool = False
    data: str = ""  # write_did: the record to write, hexadecimal ("0A1B")
    group: int = ALL_GROUPS  # clear_dtc: the group of DTCs to clear

    @property
    def writes(self) -> bool:
        """Whether this request changes the ECU (sent once per config version)."""
        return self.service in WRITE_SERVICES


@dataclass(frozen=True)
class DiagnosticsConfig:
    """Per-bus etiquette and the catalogue of data identifiers."""

    # A TOML file of [[dids]] (docs/diagnostics.md); the OBD-II PIDs are built in.
    catalogue: Path | None = None
    budget: float = 5.0  # requests per second per bus, at most
    timeout: float = 1.0  # s for the first answer (ISO 14229 P2)
    pending_timeout: float = 5.0  # s after "response pending" (NRC 0x78, P2*)
    backoff_max: float = 60.0  # s; busy (0x21), timeouts and refusals back off up to this
    transport: str = "auto"  # "kernel" (CAN_ISOTP sockets), "python" (can-isotp), "auto"
    requests: tuple[RequestConfig, ...] = ()


@dataclass(frozen=True)
class CatalogueEntry:
    """One data identifier of the catalogue file."""

    did: int
    item: DataItem


def load_catalogue(path: Path) -> dict[int, DataItem]:
    """The [[dids]] of a catalogue file, checked; errors name the file and the entry."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the DID catalogue ({exc.strerror})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid TOML catalogue: {exc}") from exc
    unknown = sorted(set(document) - {"dids"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r} (known: dids)")
    found: dict[int, DataItem] = {}
    for index, entry in enumerate(document.get("dids", [])):
        where = f"{path}: [[dids]] #{index + 1}"
        item, did = _item(entry, where)
        if did in found:
            raise ConfigError(f"{where}: DID 0x{did:04X} is listed twice")
        found[did] = item
    return found


_ITEM_KEYS = {"did": int, "name": str, "size": int, "count": int, "signed": bool,
              "scale": float, "offset": float, "unit": str, "summary": bool}


def _item(entry: object, where: str) -> tuple[DataItem, int]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    for key, value in entry.items():
        kind = _ITEM_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown key {key!r} (known: "
                              f"{', '.join(_ITEM_KEYS)})")
        numeric = kind is float and isinstance(value, int | float)
        if (isinstance(value, bool) and kind is not bool) or not (numeric
                                                                  or isinstance(value, kind)):
            raise ConfigError(f"{where}: {key} must be {kind.__name__}, got {value!r}")
    for key in ("did", "name"):
        if key not in entry:
            raise ConfigError(f"{where}: missing required key {key!r}")
    did = entry["did"]
    if not 0 <= did <= 0xFFFF:
        raise ConfigError(f"{where}: did must be 0x0000..0xFFFF")
    item = DataItem(**{key: value for key, value in entry.items() if key != "did"})
    if not 1 <= item.size <= 8 or not 1 <= item.count <= 512:
        raise ConfigError(f"{where}: size must be 1..8 bytes and count 1..512")
    if item.scale == 0:
        raise ConfigError(f"{where}: scale must not be 0")
    if not item.name.isidentifier():
        raise ConfigError(f"{where}: name {item.name!r} must be letters, digits and _")
    return item, did
