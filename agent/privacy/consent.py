"""The owner's consent, enforced on the vehicle: which signals may leave it, under which name.

Every signal has a privacy class (`technical`, `driving`, `occupant`, `location`), given by glob
rules over its key: the built-in rules below first (unless `builtin_classes = false`), then the
`[[privacy.classes]]` rules of the config; the last rule that matches decides, and a signal no
rule matches has `default_class`. A consent level allows a set of classes:

    off             nothing (batches carry anonymous health counters only)
    vehicle-health  technical
    full            technical, driving, occupant, location

The consent in force is the config's `[privacy] consent` with its `consent_version`, unless the
owner set one locally (`edge-agent diag consent LEVEL`, kept in the state folder) with a higher
version: the newest decision wins, whoever made it. A lower consent takes effect for every
batch and event not yet handed to the broker, including spooled ones (agent/output/spool.py drops
them; see docs/privacy.md).
"""

from __future__ import annotations

import base64
import dataclasses
import fnmatch
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.config.schema import CONSENT_LEVELS, PrivacyClassRule, PrivacyConfig, PseudonymConfig
from agent.errors import AgentError, ConfigError
from agent.runtime.files import atomic_write, private_folder
from agent.sampling.plan import PlannedSignal, SamplingPlan

log = logging.getLogger(__name__)

ALLOWED_CLASSES = {
    "off": frozenset(),
    "vehicle-health": frozenset({"technical"}),
    "full": frozenset({"technical", "driving", "occupant", "location"}),
}

# The built-in classification (docs/privacy.md, "Privacy classes"). The rule a reviewer signs:
# a signal that follows the driver's inputs or the car's motion second by second is `driving`,
# even when a component measures it (motor speed and torque, currents that track power, body
# pitch and roll, gear, ignition, the displayed speed, the cluster's clock); what concerns the
# cabin, its people and their habits (doors, seats, climate, settings, charging schedule) is
# `occupant`; the component's own condition (cell voltages, temperatures, faults, pressures,
# versions) is `technical`. Rules are globs over `<source>.<Message>.<Signal>` (sensors:
# `<source>.<name>`); the last match wins, so the order is: names that say what they are on
# any vehicle, then the example vehicle's message families (dbc/vehicle.dbc, every signal of
# it is classified), then its exceptions, then position, which nothing overrides. A signal no
# rule matches has `default_class` (`location`: the most protective class, see Classifier).
BUILTIN_RULES = tuple(PrivacyClassRule(match, cls) for match, cls in (
    # Names that say what they are, on any vehicle.
    ("*Pedal*", "driving"),
    ("*Odometer*", "driving"),
    ("*Trip*", "driving"),
    ("*Cabin*", "occupant"),
    ("*Occupan*", "occupant"),
    ("*Seat*", "occupant"),
    # Sensors (agent/sources/gpsd_json.py, agent/sources/sensor_protocols.py): fix quality
    # and tyres and suspension heights per wheel are the car's condition.
    ("gps.mode", "technical"),
    ("gps.hdop", "technical"),
    ("gps.sats", "technical"),
    ("gps.speed", "driving"),
    ("gps.track", "driving"),
    ("*.??.pressure", "technical"),
    ("*.??.temperature", "technical"),
    ("*.??.battery", "technical"),
    ("*.??.height", "technical"),
    # The example vehicle, family by family.
    ("*.BMS_*.*", "technical"),
    ("*.INV_*.*", "technical"),
    ("*.CHG_*.*", "technical"),
    ("*.DIAG_*.*", "technical"),
    ("*.NM_*.*", "technical"),
    ("*.VCU_PowerLimits.*", "technical"),
    ("*.VCU_DCDC.*", "technical"),
    ("*.VCU_Thermal.*", "technical"),
    ("*.VCU_Faults.*", "technical"),
    ("*.VCU_Energy.*", "technical"),
    ("*.ESP_Status.*", "technical"),
    ("*.SUS_Height.*", "technical"),
    ("*.SUS_Status.*", "technical"),
    ("*.TPMS_*.*", "technical"),
    ("*.BCM_Power.*", "technical"),
    ("*.IC_Display.*", "technical"),
    ("*.IC_Warnings.*", "technical"),
    ("*.VCU_Status.*", "driving"),
    ("*.VCU_TorqueRequest.*", "driving"),
    ("*.INV_Motor.*", "driving"),
    ("*.INV_Electrical.*", "driving"),
    ("*.ESP_VehicleSpeed.*", "driving"),
    ("*.ESP_WheelSpeeds.*", "driving"),
    ("*.ESP_WheelPulses.*", "driving"),
    ("*.ESP_Dynamics.*", "driving"),
    ("*.ESP_Brake.*", "driving"),
    ("*.EPS_*.*", "driving"),
    ("*.EPB_*.*", "driving"),
    ("*.SUS_Accel.*", "driving"),
    ("*.SUS_Damping.*", "driving"),
    ("*.ADAS_*.*", "driving"),
    ("*.BCM_Lights.*", "driving"),
    ("*.BCM_Wipers.*", "driving"),
    ("*.IC_DateTime.*", "driving"),
    ("*.IC_Odometer.*", "driving"),
    ("*.BCM_Doors.*", "occupant"),
    ("*.BCM_Seats.*", "occupant"),
    ("*.BCM_Windows.*", "occupant"),
    ("*.BCM_Keyless.*", "occupant"),
    ("*.HVAC_*.*", "occupant"),
    ("*.IC_Settings.*", "occupant"),
    ("*.CHG_Schedule.*", "occupant"),
    # Exceptions within a family.
    ("*.VCU_Energy.Trip*", "driving"),
    ("*.BMS_Pack.PackCurrent", "driving"),
    ("*.INV_Status.DCBusCurrent", "driving"),
    ("*.INV_Status.PhaseCurrentRms", "driving"),
    ("*.INV_Status.ModulationIndex", "driving"),
    ("*.CHG_*.Departure*", "occupant"),
    ("*.IC_Display.Display*", "occupant"),
    ("*.IC_Display.DisplayedSpeed", "driving"),
    ("*.IC_Display.Telltale_HighBeam", "driving"),
    ("*.IC_Display.Telltale_ACC", "driving"),
    ("*.IC_Display.Telltale_LaneAssist", "driving"),
    ("*.IC_Display.Telltale_Seatbelt", "occupant"),
    ("*.IC_Warnings.DoorAjarWarning", "occupant"),
    ("*.IC_Warnings.SeatbeltReminder", "occupant"),
    ("*.ADAS_Status.DriverMonitorState", "occupant"),
    ("*.ADAS_Status.HandsOnWheel", "occupant"),
    ("*.ADAS_BSD.DoorOpenWarning", "occupant"),
    ("*.DIAG_EcuInfo.*_Uptime", "driving"),
    # Position, whatever else matched.
    ("gps.lat", "location"),
    ("gps.lon", "location"),
    ("gps.alt", "location"),
    ("*GPS*", "location"),
    ("*Latitude*", "location"),
    ("*Longitude*", "location"),
))

LOCAL_CONSENT_FILE = "consent.json"


def rank(level: str) -> int:
    """0 for `off` up to 2 for `full`: a lower rank allows less."""
    return CONSENT_LEVELS.index(level)


@dataclass(frozen=True)
class Consent:
    level: str
    version: int
    source: str  # "config" or "local"

    @property
    def rank(self) -> int:
        return rank(self.level)

    @property
    def allowed(self) -> frozenset[str]:
        return ALLOWED_CLASSES[self.level]

    def wire(self) -> dict[str, object]:
        return {"consent": self.level, "ver": self.version}


class Classifier:
    """The privacy class of a signal key, by the rules above and the config's.

    A key no rule matches is unclassified and gets `default_class`, by default `location`:
    the most protective class, withheld by every consent below `full` and, under `full`,
    judged against the zones and kept off the wire with `tracks = false`
    (agent/privacy/location.py). An unknown signal may be anything, a position included.
    `edge-agent config check` lists the unclassified signals of a plan (`unclassified`), so
    that they get a rule.
    """

    def __init__(self, config: PrivacyConfig, location_keys: Iterable[str] = ()) -> None:
        self._rules = (*(BUILTIN_RULES if config.builtin_classes else ()), *config.classes)
        # All globs in one expression, last rule first: an alternation matches with its first
        # alternative that matches the whole key, i.e. the last rule that matches, and the
        # group that matched names it. 81 rules over a 928-signal plan took 0.1 s of every
        # start through fnmatchcase, ~30 ms on the loaded host as one expression per rule.
        # fnmatch.translate makes no capturing group, so the only ones are these.
        last_first = tuple(reversed(self._rules))
        self._match = re.compile("|".join(
            f"(?P<r{position}>{fnmatch.translate(rule.match)})"
            for position, rule in enumerate(last_first))).match if last_first else None
        self._by_group = {f"r{position}": rule for position, rule in enumerate(last_first)}
        self._decided: dict[str, PrivacyClassRule | None] = {}
        self._default = config.default_class
        # Whatever the config says is the position is location, whichever source it is from.
        self._location = frozenset(location_keys)

    def __call__(self, key: str) -> str:
        if key in self._location:
            return "location"
        rule = self.rule_for(key)
        return self._default if rule is None else rule.class_

    def rule_for(self, key: str) -> PrivacyClassRule | None:
        """The rule that decides `key`'s class (the last that matches), or None."""
        if key in self._decided:
            return self._decided[key]
        found = None if self._match is None else self._match(key)
        decided = None if found is None else self._by_group[found.lastgroup or ""]
        # Keys are a plan's and the config's: a few thousand at most, each asked several times.
        self._decided[key] = decided
        return decided

    def unclassified(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if key not in self._location and self.rule_for(key) is None]


def location_keys(config: PrivacyConfig) -> tuple[str, str]:
    return config.location.latitude, config.location.longitude


def classifier_for(config: PrivacyConfig) -> Classifier:
    return Classifier(config, location_keys(config))


def may_send(key: str, consent: Consent, classify: Classifier, *,
             tracks: bool = True) -> bool:
    cls = classify(key)
    return cls in consent.allowed and (tracks or cls != "location")


def filter_plan(plan: SamplingPlan, consent: Consent, classify: Classifier, *,
                tracks: bool = True) -> SamplingPlan:
    """The signals of `plan` that `consent` lets leave the vehicle, renumbered from 0.

    `tracks = false` keeps position signals off the wire (trip summaries only). The result may
    be empty: the batches then carry health counters only.
    """
    kept = [s for s in plan.signals if may_send(s.key, consent, classify, tracks=tracks)]
    return SamplingPlan(signals=tuple(dataclasses.replace(s, index=i) for i, s in enumerate(kept)),
                        stale_after_ms=plan.stale_after_ms)


def with_local_inputs(wire: SamplingPlan, extra: Sequence[PlannedSignal]) -> SamplingPlan:
    """`wire` plus the signals only on-vehicle logic (events) reads, numbered after it, so that
    the wire dictionary stays the prefix 0..n-1 and the batcher drops the rest."""
    have = {s.key for s in wire.signals}
    added = []
    for signal in extra:
        if signal.key not in have:
            have.add(signal.key)
            added.append(dataclasses.replace(signal, index=len(wire.signals) + len(added)))
    return SamplingPlan(signals=wire.signals + tuple(added), stale_after_ms=wire.stale_after_ms)


# The consent in force: config, or the owner's local decision when that is newer.
def effective_consent(config: PrivacyConfig, state_directory: Path) -> Consent:
    configured = Consent(config.consent, config.consent_version, "config")
    local = read_local_consent(state_directory)
    if local is not None and local.version >= configured.version:
        return local
    return configured


def read_local_consent(state_directory: Path) -> Consent | None:
    path = state_directory / LOCAL_CONSENT_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        level, version = document["level"], int(document["version"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # Unreadable owner decision: fail closed rather than fall back to a wider consent.
        log.error("privacy: %s is unreadable (%s): consent off until it is fixed", path, exc)
        return Consent("off", 2**62, "local")
    if level not in CONSENT_LEVELS:
        log.error("privacy: %s names unknown consent %r: consent off", path, level)
        return Consent("off", 2**62, "local")
    return Consent(level, version, "local")


def write_local_consent(state_directory: Path, level: str, current: Consent) -> Consent:
    """Record the owner's decision with a version above the one in force (atomic write)."""
    if level not in CONSENT_LEVELS:
        raise AgentError(f"unknown consent level {level!r}; use one of "
                         f"{', '.join(CONSENT_LEVELS)}")
    decided = Consent(level, current.version + 1, "local")
    atomic_write(private_folder(state_directory) / LOCAL_CONSENT_FILE,
                 json.dumps({"level": level, "version": decided.version}).encode(), mode=0o600)
    return decided


# The rotating pseudonym.
def load_pseudonym_secret(config: PseudonymConfig) -> bytes | None:
    if not config.enabled:
        return None
    assert config.key is not None
    try:
        secret = config.key.read_bytes()
    except OSError as exc:
        raise ConfigError(f"[privacy.pseudonym] key: cannot read {config.key} "
                          f"({exc.strerror})") from exc
    if len(secret) < 32:
        raise ConfigError(f"[privacy.pseudonym] key: {config.key} holds {len(secret)} bytes; "
                          "use 32 or more random bytes")
    return secret


def pseudonym(secret: bytes, vehicle: str, period: int) -> str:
    """`p-` and 16 base32 characters of HMAC-SHA256(secret, "<vehicle>/<period>").

    The backend, which holds the secret and the list of vehicle ids, computes the same for
    each vehicle and period to map a pseudonym back (offboard/fleet/backend.py `Pseudonyms`).
    """
    digest = hmac.new(secret, f"{vehicle}/{period}".encode(), hashlib.sha256).digest()
    return "p-" + base64.b32encode(digest[:10]).decode().lower()


def rotation_period(wall_ms: int, rotation_s: float) -> int:
    return int(wall_ms // round(rotation_s * 1000))


class Identity:
    """The vehicle's name on the wire at a given time: its id, or its current pseudonym."""

    def __init__(self, vehicle: str, config: PseudonymConfig) -> None:
        self.vehicle = vehicle
        self._secret = load_pseudonym_secret(config)
        self._rotation = config.rotation

    @property
    def pseudonymous(self) -> bool:
        return self._secret is not None

    def at(self, wall_ms: int) -> str:
        if self._secret is None:
            return self.vehicle
        return pseudonym(self._secret, self.vehicle, rotation_period(wall_ms, self._rotation))
