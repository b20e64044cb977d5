"""config.toml: the agent's whole behaviour, validated into frozen dataclasses.

Each section maps to one module of the data path; the dataclass fields below are the schema, and
their defaults are the documented defaults (config.toml in the repository repeats them with
comments). Unknown keys and wrong types are errors that name the file, line, section and key,
because a typo in a fleet config must never be silently ignored.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from agent.config.source import ORIGIN_OF, SourceConfig
from agent.diagnostics.config import DiagnosticsConfig
from agent.errors import ConfigError, ConfigProblems

# The batch schemas agent/wire/body.py can write (its SCHEMA_VERSIONS; a test holds them equal).
# Not imported from there: loading a config must not load numpy and cbor2.
BATCH_SCHEMAS = (1, 2)

SAMPLING_MODES = ("last", "stats", "change", "bounded")
MAX_LATENESS_LIMIT = 60.0  # seconds; [sampling] max_lateness may not exceed it
# The highest config version, local or in an update (docs/ota.md). Batches carry it as a CBOR
# uint and acks and `diag status --json` as a JSON number: 2**53 - 1 fits uint64 and int64
# columns and is the largest integer every JSON reader keeps exact.
MAX_CONFIG_VERSION = 2**53 - 1


@dataclass(frozen=True)
class VehicleConfig:
    """Who this vehicle is on the wire, and the fleet groups an OTA update may target."""

    id: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class SignalRule:
    """Selects signals by glob over `<source>.<Message>.<Signal>` and says how to sample them."""

    match: str
    period: float | None = None
    mode: str = "last"
    exclude: bool = False
    # Modes `change` and `bounded` (docs/sampling.md): physical units, seconds.
    deadband: float = 0.0
    epsilon: float | None = None
    heartbeat: float = 60.0


@dataclass(frozen=True)
class SamplingConfig:
    period: float = 1.0
    stale_after: float = 10.0
    # Event time across sources: a source lagging the newest one by more than this many
    # seconds of event time is not waited for (docs in config.toml).
    max_lateness: float = 2.0
    signals: tuple[SignalRule, ...] = ()


@dataclass(frozen=True)
class RingConfig:
    memory_mb: float = 4.0  # 3.7 one-minute windows of 1,000 signals at 1 Hz


@dataclass(frozen=True)
class BatchConfig:
    window: float = 60.0
    zstd_level: int = 3
    dictionary_every: int = 0  # 0: in band only when it is new (boot, change); N: every Nth too
    heartbeat: float = 3600.0  # s without a batch after which a window with no sample is sealed
    schema: int = 2  # wire-format version written; 1 for backends that read only schema 1


@dataclass(frozen=True)
class KeysConfig:
    signing_key: Path


@dataclass(frozen=True)
class UplinkConfig:
    host: str = "localhost"
    port: int = 8883
    prefix: str = "fleet"
    tls: bool = True
    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    keepalive: int = 30
    max_inflight: int = 20
    max_unacked: int = 120
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    drain_rate: float = 50.0


@dataclass(frozen=True)
class SpoolConfig:
    max_mb: float = 64.0


@dataclass(frozen=True)
class StateConfig:
    directory: Path


@dataclass(frozen=True)
class ControlConfig:
    """The local diagnostics socket; by default in $RUNTIME_DIRECTORY or the state folder."""

    socket: Path | None = None
    group: str = "edge-agent-diag"


@dataclass(frozen=True)
class OtaConfig:
    """Signed config updates over MQTT (agent/ota/update.py): the backend keys this vehicle trusts.

    Several keys so that a backend key can rotate: pin the next key before signing with it.
    """

    enabled: bool = True
    trusted_keys: tuple[Path, ...] = ()
    grace_period: float = 30.0
    max_bytes: int = 1_048_576


CONSENT_LEVELS = ("off", "vehicle-health", "full")
PRIVACY_CLASSES = ("technical", "driving", "occupant", "location")


@dataclass(frozen=True)
class PrivacyClassRule:
    """Gives the signals whose key matches the glob `match` the privacy class `class`."""

    match: str
    class_: str


@dataclass(frozen=True)
class ZoneConfig:
    """A privacy zone: a circle (`center` = [lat, lon], `radius_m`) or a `polygon` of
    [lat, lon] corners. Inside it, position is never sent and trips are cut."""

    name: str
    center: tuple[float, ...] = ()
    radius_m: float = 0.0
    polygon: tuple[tuple[float, ...], ...] = ()


@dataclass(frozen=True)
class LocationConfig:
    """Which signals are the position (any source), and how precisely it may leave."""

    latitude: str = "gps.lat"
    longitude: str = "gps.lon"
    precision_m: float = 0.0
    tracks: bool = True


@dataclass(frozen=True)
class PseudonymConfig:
    """A rotating pseudonym instead of the vehicle id inside batches and events."""

    enabled: bool = False
    key: Path | None = None
    rotation: float = 86400.0


@dataclass(frozen=True)
class PrivacyConfig:
    """The owner's consent and what each signal reveals (agent/privacy/consent.py,
    docs/privacy.md)."""

    consent: str = "full"
    consent_version: int = 0
    on_downgrade: str = "drop"
    builtin_classes: bool = True
    default_class: str = "location"  # unclassified: the most protective (agent/privacy/consent.py)
    classes: tuple[PrivacyClassRule, ...] = ()
    location: LocationConfig = LocationConfig()
    zones: tuple[ZoneConfig, ...] = ()
    pseudonym: PseudonymConfig = PseudonymConfig()


@dataclass(frozen=True)
class TripEventConfig:
    enabled: bool = True
    start_after: float = 2.0
    end_after: float = 5.0
    odometer: str = "can0.IC_Odometer.Odometer"
    pack_voltage: str = "can0.BMS_Pack.PackVoltage"
    pack_current: str = "can0.BMS_Pack.PackCurrent"


@dataclass(frozen=True)
class StopEventConfig:
    enabled: bool = True
    stopped_below: float = 0.5
    moving_above: float = 3.0
    min_dwell: float = 30.0
    depart_after: float = 2.0


@dataclass(frozen=True)
class LoadEventConfig:
    enabled: bool = True
    heights: tuple[str, ...] = ("can0.SUS_Height.SuspHeight_RL", "can0.SUS_Height.SuspHeight_RR")
    pressures: tuple[str, ...] = ("can0.TPMS_Status.TirePressure_RL",
                                  "can0.TPMS_Status.TirePressure_RR")
    tire_temperatures: tuple[str, ...] = ("can0.TPMS_Status.TireTemp_RL",
                                          "can0.TPMS_Status.TireTemp_RR")
    height_threshold_mm: float = 10.0
    pressure_threshold_kpa: float = 3.0
    settle: float = 2.0
    window: float = 10.0
    guard: float = 2.0
    min_samples: int = 3


@dataclass(frozen=True)
class BatteryEventConfig:
    enabled: bool = True
    cell_spread: str = "can0.BMS_CellStats.CellVoltageDelta"
    max_temperature: str = "can0.BMS_CellStats.MaxModuleTemp"
    min_temperature: str = "can0.BMS_CellStats.MinModuleTemp"
    soc: str = "can0.BMS_Pack.SOC"
    spread_max_mv: float = 50.0
    temperature_max: float = 55.0
    temperature_min: float = -20.0
    soc_drop_parked: float = 2.0
    hysteresis: float = 0.1
    hold: float = 5.0
    min_interval: float = 600.0


@dataclass(frozen=True)
class TriggerConfig:
    """A condition on one signal, or an expression (`when`, agent/events/expression.py), that
    captures the ring's look-back and a post window."""

    name: str
    signal: str = ""
    when: str = ""
    above: float | None = None
    below: float | None = None
    equals: str | None = None
    capture: tuple[str, ...] = ()
    lookback: float = 30.0
    post: float = 10.0
    hold: float = 0.0
    min_interval: float = 300.0


@dataclass(frozen=True)
class EventsConfig:
    """On-vehicle events (agent/events/, docs/events.md), sent on {prefix}/{vehicle}/events."""

    enabled: bool = False
    ignition: str = "can0.VCU_Status.IgnitionState"
    ignition_on: tuple[str, ...] = ("On", "Start")
    speed: str = "can0.ESP_VehicleSpeed.VehicleSpeed"
    trip: TripEventConfig = TripEventConfig()
    stop: StopEventConfig = StopEventConfig()
    load: LoadEventConfig = LoadEventConfig()
    battery: BatteryEventConfig = BatteryEventConfig()
    triggers: tuple[TriggerConfig, ...] = ()


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    vehicle: VehicleConfig
    sources: tuple[SourceConfig, ...]
    keys: KeysConfig
    state: StateConfig
    version: int = 1
    sampling: SamplingConfig = SamplingConfig()
    ring: RingConfig = RingConfig()
    batch: BatchConfig = BatchConfig()
    spool: SpoolConfig = SpoolConfig()
    uplink: UplinkConfig = UplinkConfig()
    control: ControlConfig = ControlConfig()
    ota: OtaConfig = OtaConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    events: EventsConfig = EventsConfig()
    diagnostics: DiagnosticsConfig = dataclasses.field(default_factory=DiagnosticsConfig)


# Identity and trust stay local: an update may not rename the vehicle, swap its signing key,
# move its state or change which backend keys it trusts.
LOCAL_ONLY_SECTIONS = ("vehicle", "keys", "state", "control", "ota")


def load_config(path: Path) -> AgentConfig:
    """Read and validate a config file; relative paths in it are relative to its folder."""
    return parse_config(_read_text(path), path.resolve())


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): TOML files are "
                          "UTF-8") from exc


def parse_config(text: str, path: Path) -> AgentConfig:
    return _from_document(_parse_toml(text, str(path)), _Builder(path, text))


def merge_update(path: Path, update_text: str, version: int, label: str, *,
                 signed: bool = False) -> AgentConfig:
    """The local config file at `path` with a config update laid over it.

    Tables merge key by key; arrays (`[[sources]]`, `[[sampling.signals]]`) and values replace.
    Relative paths in the update are relative to the local file's folder. The update's own
    `version`, if it has one, must be `version`. Errors name `label` and the update's lines.

    `signed`: the update's signature verified (agent/ota/update.py says so, nothing else
    does). Only then may its own [[diagnostics.requests]] enable a clear or a write
    (`allow_write`); requests the local file keeps (the update does not set the array) never.
    """
    local = _parse_toml(_read_text(path), str(path))
    update = _parse_toml(update_text, label)
    for section in LOCAL_ONLY_SECTIONS:
        if section in update:
            raise ConfigError(f"{label}: [{section}] is local to the vehicle and cannot be set "
                              "by an update")
    if update.get("version", version) != version:
        raise ConfigError(f"{label}: version = {update['version']!r} differs from the "
                          f"update's version {version}")
    merged = _merge(local, update)
    merged["version"] = version
    diagnostics = update.get("diagnostics")
    # Arrays replace: when the signed text sets the requests, every one of them is its own.
    writes = signed and isinstance(diagnostics, dict) and "requests" in diagnostics
    return _from_document(merged, _Builder(path.resolve(), update_text, label=label),
                          writes_allowed=writes)


def _parse_toml(text: str, label: str) -> dict[str, Any]:
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{label}: not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{label}: not valid TOML: nested too deep") from exc
    if "path" in document:
        raise ConfigError(f"{label}: unknown top-level key 'path'")
    return document


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merge(base[key], value)
        else:
            merged[key] = value
    return merged


def _from_document(document: dict[str, Any], builder: _Builder, *,
                   writes_allowed: bool = False) -> AgentConfig:
    document.setdefault("state", {"directory": "state"})
    config = builder.build(AgentConfig, {**document, "path": builder.path.name}, "")
    _check_consistency(config, builder)
    return _with_diagnostics(config, builder, writes_allowed)


def _with_diagnostics(config: AgentConfig, builder: _Builder,
                      writes_allowed: bool) -> AgentConfig:
    """The sources [[diagnostics.requests]] make: one `<bus>.diag` per bus they name.
    `writes_allowed`: the requests come from a verified signed update (merge_update)."""
    from agent.sources.diagnostics import diagnostics_sources

    made = diagnostics_sources(config.sources, config.diagnostics, builder.error,
                               config.events.ignition, config.events.ignition_on,
                               writes_allowed=writes_allowed, version=config.version,
                               state_directory=config.state.directory)
    return dataclasses.replace(config, sources=config.sources + made) if made else config


def _check_consistency(config: AgentConfig, builder: _Builder) -> None:
    """Checks across keys, section by section; every section's first mistake is reported,
    all in one ConfigProblems when there are several."""
    problems = []
    for check in (_check_version, _check_sources, _check_sampling, _check_sizes,
                  _check_privacy_section, _check_uplink, _check_triggers):
        try:
            check(config, builder)
        except ConfigError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(problems)


def _check_version(config: AgentConfig, builder: _Builder) -> None:
    if not 0 <= config.version <= MAX_CONFIG_VERSION:
        raise builder.error("", "version", f"must be a whole number from 0 to "
                            f"{MAX_CONFIG_VERSION} (2**53 - 1, docs/ota.md), got "
                            f"{config.version}")


def _check_sources(config: AgentConfig, builder: _Builder) -> None:
    from agent.sources.registry import source_type  # imports every source type

    names = [source.name for source in config.sources]
    if not names:
        raise builder.error("sources", "", "at least one [[sources]] entry is needed")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise builder.error("sources", "name", f"source names must be unique: {duplicates}")
    for source in config.sources:
        where = f"sources.{source.name}"
        source_type(source.type).check(source, partial(builder.error, where))


def _check_sampling(config: AgentConfig, builder: _Builder) -> None:
    for rule in config.sampling.signals:
        if rule.mode not in SAMPLING_MODES:
            raise builder.error("sampling.signals", "mode", f"{rule.mode!r} is not one of "
                                f"{', '.join(SAMPLING_MODES)}")
        if rule.period is not None and rule.period <= 0:
            raise builder.error("sampling.signals", "period", "must be a positive number of s")
        _check_frame_time_rule(rule, builder)
    if config.sampling.period <= 0:
        raise builder.error("sampling", "period", "must be a positive number of seconds")
    if not 0 < config.sampling.max_lateness <= MAX_LATENESS_LIMIT:
        raise builder.error("sampling", "max_lateness", "must be more than 0 and at most "
                            f"{MAX_LATENESS_LIMIT:g} seconds")
    if config.batch.window < config.sampling.period:
        raise builder.error("batch", "window", "must be at least the sampling period")


def _check_frame_time_rule(rule: SignalRule, builder: _Builder) -> None:
    """The numbers of modes `change` and `bounded` (docs/sampling.md)."""
    if not (math.isfinite(rule.deadband) and rule.deadband >= 0):
        raise builder.error("sampling.signals", "deadband", "must be 0 or more (physical units)")
    if not (math.isfinite(rule.heartbeat) and rule.heartbeat > 0):
        raise builder.error("sampling.signals", "heartbeat", "must be a positive number of s")
    if rule.epsilon is not None and not (math.isfinite(rule.epsilon) and rule.epsilon > 0):
        raise builder.error("sampling.signals", "epsilon", "must be more than 0 (physical units)")
    if rule.mode == "bounded" and rule.epsilon is None and not rule.exclude:
        raise builder.error("sampling.signals", "epsilon", f"mode bounded needs epsilon (the "
                            f"largest error allowed, in the signal's unit) for {rule.match!r}")


def _check_triggers(config: AgentConfig, builder: _Builder) -> None:
    """A trigger watches one signal or evaluates an expression: exactly one of the two (the
    expression's grammar is checked here; its signals by `config check`)."""
    for trigger in config.events.triggers:
        if bool(trigger.signal) == bool(trigger.when):
            raise builder.error("events.triggers", "when", f"trigger {trigger.name!r} needs "
                                "either `signal` (with above/below/equals) or `when`, not both")
        if trigger.when:
            from agent.events.expression import parse  # only configs with expressions

            try:
                parse(trigger.when)
            except ConfigError as exc:
                raise builder.error("events.triggers", "when", str(exc)) from exc


def _check_sizes(config: AgentConfig, builder: _Builder) -> None:
    if config.batch.schema not in BATCH_SCHEMAS:
        raise builder.error("batch", "schema", f"{config.batch.schema} is not one of "
                            f"{', '.join(map(str, BATCH_SCHEMAS))}")
    if config.batch.dictionary_every < 0:
        raise builder.error("batch", "dictionary_every", "must be 0 (the dictionary travels "
                            "in band only when it is new) or a number of batches")
    if config.batch.heartbeat != 0 and config.batch.heartbeat < config.batch.window:
        raise builder.error("batch", "heartbeat", "must be 0 (seal every window, even one in "
                            "which nothing was sampled) or at least [batch] window seconds")
    if config.spool.max_mb <= 0:
        raise builder.error("spool", "max_mb", "must be a positive number of MB")
    if config.ring.memory_mb <= 0:
        raise builder.error("ring", "memory_mb", "must be a positive number of MB")
    if config.ota.grace_period <= 0:
        raise builder.error("ota", "grace_period", "must be a positive number of seconds")
    if config.ota.max_bytes <= 0:
        raise builder.error("ota", "max_bytes", "must be a positive number of bytes")


def _check_privacy_section(config: AgentConfig, builder: _Builder) -> None:
    _check_privacy(config.privacy, builder)


def _check_uplink(config: AgentConfig, builder: _Builder) -> None:
    if config.uplink.tls:
        for name in ("ca_cert", "cert", "key"):
            if getattr(config.uplink, name) is None:
                raise builder.error("uplink", name, "TLS needs ca_cert, cert and key (or set "
                                    "tls = false explicitly to publish in plaintext)")


def _check_privacy(privacy: PrivacyConfig, builder: _Builder) -> None:
    if privacy.consent not in CONSENT_LEVELS:
        raise builder.error("privacy", "consent", f"{privacy.consent!r} is not one of "
                            f"{', '.join(CONSENT_LEVELS)}")
    if privacy.on_downgrade != "drop":
        raise builder.error("privacy", "on_downgrade", "only \"drop\" is supported "
                            "(docs/privacy.md says why)")
    for name in (privacy.default_class, *(rule.class_ for rule in privacy.classes)):
        if name not in PRIVACY_CLASSES:
            raise builder.error("privacy.classes", "class", f"{name!r} is not one of "
                                f"{', '.join(PRIVACY_CLASSES)}")
    if privacy.location.precision_m < 0:
        raise builder.error("privacy.location", "precision_m", "must be 0 (full) or more")
    for zone in privacy.zones:
        where = f"privacy.zones.{zone.name}"
        circle = len(zone.center) == 2 and zone.radius_m > 0
        polygon = len(zone.polygon) >= 3 and all(len(p) == 2 for p in zone.polygon)
        if circle == polygon:
            raise builder.error(where, "center", "give either center = [lat, lon] with "
                                "radius_m > 0, or polygon = [[lat, lon], ...] (3+ corners)")
    if privacy.pseudonym.enabled and privacy.pseudonym.key is None:
        raise builder.error("privacy.pseudonym", "key", "a pseudonym needs the secret the "
                            "backend shares: a file of 32+ random bytes (docs/privacy.md)")
    # The period is floor(ms / round(rotation * 1000)): below 1 ms it divides by zero.
    if privacy.pseudonym.rotation < 0.001:
        raise builder.error("privacy.pseudonym", "rotation", "must be at least 0.001 s")


class _Builder:
    """Turns TOML tables into the dataclasses above, checking keys and types."""

    def __init__(self, path: Path, text: str, label: str | None = None) -> None:
        self.path = path
        self.base = path.parent
        self.lines = text.splitlines()
        self.label = label or str(path)

    def error(self, section: str, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.where(section, key)}: {message}")

    def where(self, section: str, key: str) -> str:
        """Where the file sets `key` of `section`: file:line: [section] key (see `_line_of`)."""
        line = self._line_of(section, key)
        place = f"{self.label}:{line}" if line else self.label
        name = (f"[{section}] {key}" if section else f"[{key}]") if key else f"[{section}]"
        return f"{place}: {name}"

    def _line_of(self, section: str, key: str) -> int | None:
        """Best-effort line number: the key's line after its section header, else the header.

        An entry of an array of tables (`sources.can1`: the [[sources]] whose name is "can1",
        or the second one without names) is looked up in its own block."""
        entry = self._entry_block(section)
        if entry is not None:
            header_line, lines = entry
            found = next((number for number, line in lines
                          if key and re.match(rf"{re.escape(key)}\s*=", line)), None)
            return found or header_line
        header = section.split(".")[0]
        in_section = header == ""
        header_line = None
        for number, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            if stripped.startswith("["):
                name = stripped.strip("[]").strip()
                in_section = name == section or name.split(".")[0] == header
                if in_section and header_line is None:
                    header_line = number
            elif in_section and key and re.match(rf"{re.escape(key)}\s*=", stripped):
                return number
        return header_line

    def _entry_block(self, section: str) -> tuple[int, list[tuple[int, str]]] | None:
        """The header line and the (number, stripped line)s of one [[array]] entry."""
        array, _, label = section.rpartition(".")
        entries: list[tuple[int, list[tuple[int, str]]]] = []
        inside = False
        for number, line in enumerate(self.lines, start=1):
            stripped = line.strip()
            if stripped.startswith("["):
                inside = stripped.startswith("[[") and stripped.strip("[]").strip() == array
                if inside:
                    entries.append((number, []))
            elif inside:
                entries[-1][1].append((number, stripped))
        named = rf"name\s*=\s*[\"']{re.escape(label)}[\"']\s*(#|$)"
        for entry in entries:
            if any(re.match(named, line) for _, line in entry[1]):
                return entry
        if label.isdigit() and int(label) < len(entries):
            return entries[int(label)]
        return None

    def build(self, cls: type, table: Any, section: str) -> Any:
        if not isinstance(table, dict):
            raise self.error(section, "", f"must be a table, got {type(table).__name__}")
        hints = typing.get_type_hints(cls)
        # TOML keys that are Python keywords (`class`) are fields with a trailing underscore.
        table = {f"{k}_" if keyword.iskeyword(k) else k: v for k, v in table.items()}
        origins = {f.name: f.metadata[ORIGIN_OF] for f in dataclasses.fields(cls)
                   if ORIGIN_OF in f.metadata}
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in origins}
        unknown = sorted(set(table) - set(fields))
        if unknown:
            raise self.error(section, unknown[0], f"unknown key (known keys: "
                             f"{', '.join(sorted(k for k in fields if k != 'path'))})")
        values: dict[str, Any] = {}
        for name, spec in fields.items():
            if name in table:
                values[name] = self._convert(hints[name], table[name], section, name)
            elif (spec.default is dataclasses.MISSING
                  and spec.default_factory is dataclasses.MISSING):
                raise self.error(section, name, "missing required key")
        values.update({name: self.where(section, key) for name, key in origins.items()})
        return cls(**values)

    def _convert(self, hint: Any, value: Any, section: str, key: str) -> Any:
        where = f"{section}.{key}" if section else key
        origin = typing.get_origin(hint)
        if origin in (types.UnionType, typing.Union):
            options = [arg for arg in typing.get_args(hint) if arg is not type(None)]
            matching = [option for option in options if _matches(option, value)]
            return self._convert((matching or options)[0], value, section, key)
        if origin is tuple:
            item = typing.get_args(hint)[0]
            if not isinstance(value, list):
                raise self.error(section, key, f"must be a list, got {_describe(value)}")
            if dataclasses.is_dataclass(item):
                return tuple(self._build_item(item, entry, where, index)
                             for index, entry in enumerate(value))
            return tuple(self._convert(item, entry, section, key) for entry in value)
        if dataclasses.is_dataclass(hint):
            return self.build(hint, value, where)
        if hint is Path:
            if not isinstance(value, str) or not value:
                raise self.error(section, key, f"must be a path string, got {_describe(value)}")
            if "\0" in value:
                raise self.error(section, key, "must not contain a NUL character")
            try:
                candidate = Path(value).expanduser()
            except RuntimeError as exc:  # "~someone" for a user this system does not have
                raise self.error(section, key, f"cannot expand {value!r}: no such user") \
                    from exc
            return candidate if candidate.is_absolute() else (self.base / candidate)
        if hint is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError as exc:
                raise self.error(section, key, "is too large a number") from exc
        if hint is bool and not isinstance(value, bool):
            raise self.error(section, key, f"must be true or false, got {_describe(value)}")
        if hint in (int, float) and isinstance(value, bool):
            raise self.error(section, key, f"must be a number, got {_describe(value)}")
        if not isinstance(value, hint):
            raise self.error(section, key, f"must be {_article(hint)}, got {_describe(value)}")
        # TOML has nan and inf, and every range check (`<= 0`, `> 60`) is false for nan: one
        # check here instead of one per key, before any of them can be fooled.
        if hint is float and not math.isfinite(value):
            raise self.error(section, key, f"must be a finite number, got {value}")
        return value

    def _build_item(self, cls: type, entry: Any, where: str, index: int) -> Any:
        from agent.sources.registry import source_type

        label = entry.get("name", index) if isinstance(entry, dict) else index
        if cls is SourceConfig and isinstance(entry, dict) and isinstance(entry.get("type"), str):
            cls = source_type(entry["type"]).config  # each source type has its own keys
        return self.build(cls, entry, f"{where}.{label}")


def _matches(hint: Any, value: Any) -> bool:
    """Whether `value` is of the plain type `hint` (picks the member of a union to convert to)."""
    return isinstance(hint, type) and isinstance(value, hint) and not (
        isinstance(value, bool) and hint is not bool)


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _article(hint: type) -> str:
    return {int: "an integer", float: "a number", str: "a string"}.get(hint, hint.__name__)


@dataclass(frozen=True)
class ControlSettings:
    """Just what says where the control socket is and who may use it."""

    control: ControlConfig
    state: StateConfig


def read_control_settings(path: Path) -> ControlSettings:
    """[control] and [state] of a config file, checked as load_config checks them, without
    the rest: diagnostics find the socket without importing every source type (python-can,
    cantools), which takes longer than all the rest of a `diag status`."""
    text = _read_text(path)
    document = _parse_toml(text, str(path))
    builder = _Builder(path.resolve(), text)
    return ControlSettings(builder.build(ControlConfig, document.get("control", {}), "control"),
                           builder.build(StateConfig, document.get("state",
                                                                   {"directory": "state"}),
                                         "state"))


def control_socket_path(config: AgentConfig | ControlSettings,
                        environ: dict[str, str] | None = None) -> Path:
    """Where the control socket lives: config, else systemd's RuntimeDirectory, else state."""
    if config.control.socket is not None:
        return config.control.socket
    runtime = (environ if environ is not None else dict(os.environ)).get("RUNTIME_DIRECTORY")
    if runtime:
        return Path(runtime.split(":")[0]) / "control.sock"
    return config.state.directory / "control.sock"
