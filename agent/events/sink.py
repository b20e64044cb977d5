"""From a detector's finding to a signed event in the spool, through the owner's consent.

An event leaves the vehicle only when its privacy class is allowed and every signal whose
value it reveals (`Event.signals`, e.g. a trigger's condition) is allowed; the samples of a
trigger capture are filtered by class, then go through the location policy like telemetry
(positions paired by time, zone-checked and snapped; other location values only where that
position may be sent; none with `tracks = false`). Its positions go through the same policy:
dropped without `location` consent, dropped inside a privacy zone, snapped to the grid
otherwise. What is withheld is counted.
Events are spooled at event priority and under the consent rank they were sealed with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from agent.events.codec import EventBody, encode_event
from agent.events.model import Event
from agent.output.spool import PRIORITY_EVENT, Spool, SpooledBatch
from agent.privacy.consent import Classifier, Consent
from agent.privacy.location import LocationPolicy
from agent.wire.cose import Signer

log = logging.getLogger(__name__)


@dataclass
class EventCounters:
    sent: int = 0
    withheld: dict[str, int] = field(default_factory=dict)
    positions_withheld: int = 0
    samples_withheld: int = 0

    def stats(self) -> EventDelivery:
        # dict() copies in one step under the GIL while the pipeline may add a key.
        return EventDelivery(self.sent, dict(self.withheld), self.positions_withheld,
                             self.samples_withheld)


@dataclass(frozen=True)
class EventDelivery:
    """A snapshot of `EventCounters`: events sent, withheld by type, positions withheld, and
    the position samples of look-back captures withheld from events that were sent."""

    sent: int
    withheld: Mapping[str, int]
    positions_withheld: int
    samples_withheld: int = 0


@dataclass(frozen=True)
class EventIdentity:
    boot: bytes
    config_version: int
    name_at: Callable[[int], str]
    clock: Callable[[], str]


class EventSink:
    def __init__(self, consent: Consent, classify: Classifier, location: LocationPolicy,
                 identity: EventIdentity, signer: Signer, spool: Spool,
                 submit: Callable[[SpooledBatch], None], counters: EventCounters,
                 next_seq: Callable[[], int]) -> None:
        self._consent = consent
        self._classify = classify
        self._location = location
        self._identity = identity
        self._signer = signer
        self._spool = spool
        self._submit = submit
        self.counters = counters
        self._next_seq = next_seq

    def __call__(self, event: Event) -> None:
        body = self.filtered(event)
        if body is None:
            self.counters.withheld[event.type] = self.counters.withheld.get(event.type, 0) + 1
            log.info("event %s at %d kept on the vehicle (consent %s)", event.type,
                     event.time_ms, self._consent.level)
            return
        envelope = self._signer.sign(encode_event(body))
        spooled = self._spool.put("events", self._identity.boot, body.seq, envelope,
                                  priority=PRIORITY_EVENT, consent=self._consent.rank)
        self.counters.sent += 1
        log.info("event %d %s at %d: %s", body.seq, event.type, event.time_ms,
                 "spooled" if spooled.id is not None else "in memory only")
        self._submit(spooled)

    def filtered(self, event: Event) -> EventBody | None:
        allowed = self._consent.allowed
        if event.privacy_class not in allowed:
            return None
        data = dict(event.data)
        samples = data.get("samples")
        if isinstance(samples, dict):
            samples = {k: v for k, v in samples.items() if self._classify(k) in allowed}
            data["samples"], withheld = self._location.filter_captured(
                samples, lambda key: self._classify(key) == "location")
            self.counters.samples_withheld += withheld
        if any(self._classify(k) not in allowed for k in event.signals):
            return None
        positions = {}
        for name, (lat, lon) in event.positions.items():
            revealed = self._location.reveal(lat, lon) if "location" in allowed else None
            if revealed is None:
                self.counters.positions_withheld += 1
            else:
                positions[name] = revealed
        identity = self._identity
        return EventBody(vehicle=identity.name_at(event.time_ms), boot=identity.boot,
                         seq=self._next_seq(), type=event.type, time_ms=event.time_ms,
                         clock=identity.clock(), config_version=identity.config_version,
                         privacy=self._consent.wire(), data=data, positions=positions)


class EventSequence:
    """Event numbers per boot, kept across config reloads (gap detection at the backend)."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self) -> int:
        with self._lock:
            number, self._next = self._next, self._next + 1
            return number
