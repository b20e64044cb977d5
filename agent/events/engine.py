"""Feeds the detectors from the ring at every sampling tick, and hands their events on.

The engine keeps its own cursor in the ring: at each tick it reads the records written since,
keeps the newest value of each input signal (the mean for `stats` signals) in physical units,
and lets every detector look. A value older than the plan's `stale_after` is missing, as it
is for the sampler. Detectors whose inputs are in no source are left out, with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from agent.config.schema import EventsConfig, LocationConfig, SamplingConfig, SignalRule
from agent.events.battery import BatteryDetector
from agent.events.dtc import DtcDetector
from agent.events.expression import ExpressionError, SignalType, check, parse, signals_of
from agent.events.expression_eval import Evaluator, Scaling
from agent.events.load import LoadChangeDetector
from agent.events.model import Detector, Event
from agent.events.stop import StopDetector
from agent.events.trigger import ExpressionTrigger, TriggerDetector
from agent.events.trip import TripDetector
from agent.sampling.plan import PlannedSignal, SamplingPlan, build_plan
from agent.sampling.ring import Field, Ring, RingSlice
from agent.sources.catalogue import Catalogue

if TYPE_CHECKING:
    from agent.sampling.plan import CanDatabase

log = logging.getLogger(__name__)


def wanted_signals(config: EventsConfig) -> tuple[str, ...]:
    """Every signal key the enabled detectors may read (for the local plan)."""
    if not config.enabled:
        return ()
    keys = [config.ignition, config.speed]
    if config.trip.enabled:
        keys += [config.trip.odometer, config.trip.pack_voltage, config.trip.pack_current]
    if config.load.enabled:
        keys += [*config.load.heights, *config.load.pressures, *config.load.tire_temperatures]
    if config.battery.enabled:
        battery = config.battery
        keys += [battery.cell_spread, battery.max_temperature, battery.min_temperature,
                 battery.soc]
    for trigger in config.triggers:
        keys += [trigger.signal] if trigger.signal else _expression_signals(trigger.when)
    return tuple(dict.fromkeys(keys))


def _expression_signals(text: str) -> list[str]:
    try:
        return list(signals_of(parse(text)))
    except ExpressionError:  # the config check refused it already; the engine says so too
        return []


def event_inputs(config: EventsConfig, databases: Mapping[str, CanDatabase | Catalogue],
                 sampling: SamplingConfig, positions: Sequence[str] = ()
                 ) -> tuple[PlannedSignal, ...]:
    """The wanted signals that some source's database or catalogue has, planned as `last`
    samples. `positions` (the latitude and longitude keys) are read for trips and stops even
    when they are not sent as telemetry (`tracks = false`: trip summaries keep positions)."""
    wanted = wanted_signals(config)
    if wanted and (config.trip.enabled or config.stop.enabled):
        wanted = tuple(dict.fromkeys((*wanted, *positions)))
    present = [SignalRule(match=key) for key in wanted if _source_has(databases, key)]
    if not present:
        return ()
    return build_plan(SamplingConfig(period=sampling.period, stale_after=sampling.stale_after,
                                     signals=tuple(present)), databases).signals


def _source_has(databases: Mapping[str, CanDatabase | Catalogue], key: str) -> bool:
    # Source names may hold dots (`can0.diag`, agent/sources/diagnostics.py): the longest
    # name that prefixes the key is its source.
    sources = [name for name in databases if key.startswith(f"{name}.")]
    if not sources:
        return False
    source = max(sources, key=len)
    database, rest = databases[source], key[len(source) + 1:]
    if isinstance(database, tuple):  # a Catalogue
        return any(entry.quantity == rest for entry in database)
    message, _, signal = rest.rpartition(".")
    # The tables and cantools' database alike: the names of messages and of their signals.
    return any(candidate.name == message and any(s.name == signal for s in candidate.signals)
               for candidate in database.messages)


class _Readings:
    def __init__(self, engine: EventEngine, time_ms: int) -> None:
        self._engine = engine
        self.time_ms = time_ms

    def _fresh(self, key: str) -> tuple[int, float] | None:
        latest = self._engine.latest.get(key)
        if latest is None or self.time_ms - latest[0] > self._engine.stale_after_ms:
            return None
        return latest

    def value(self, key: str) -> float | None:
        fresh = self._fresh(key)
        return None if fresh is None else fresh[1]

    def label(self, key: str) -> str | None:
        fresh = self._fresh(key)
        if fresh is None:
            return None
        signal = self._engine.signals[key]
        raw = round((fresh[1] - signal.offset) / signal.scale)
        return (signal.choices or {}).get(raw, str(fresh[1]))

    def position(self) -> tuple[float, float] | None:
        lat, lon = self.value(self._engine.latitude), self.value(self._engine.longitude)
        return None if lat is None or lon is None else (lat, lon)


@dataclass(frozen=True)
class EngineStats:
    detectors: tuple[str, ...]
    found: Mapping[str, int]  # events found by type since start


class EventEngine:
    def __init__(self, config: EventsConfig, location: LocationConfig, plan: SamplingPlan,
                 ring: Ring, on_event: Callable[[Event], None]) -> None:
        self._ring = ring
        self._on_event = on_event
        self.signals: dict[str, PlannedSignal] = {s.key: s for s in plan.signals}
        self.latitude, self.longitude = location.latitude, location.longitude
        self.stale_after_ms = plan.stale_after_ms
        self.latest: dict[str, tuple[int, float]] = {}
        self.found: dict[str, int] = {}
        self.detectors = self._detectors(config, frozenset(self.signals))
        inputs = {key for d in self.detectors for key in d.inputs} | {self.latitude,
                                                                      self.longitude}
        self._by_index = {s.index: s for s in plan.signals if s.key in inputs}
        self._indices = np.array(sorted(self._by_index), dtype=np.uint16)
        self._cursor = ring.written

    def _detectors(self, config: EventsConfig, available: frozenset[str]) -> list[Detector]:
        if not config.enabled:
            return []
        detectors: list[Detector] = []
        if config.speed not in available:
            log.warning("events: speed signal %s is in no source: trips, stops and load "
                        "changes are off", config.speed)
        trip = TripDetector(config, available) if config.trip.enabled else None
        if trip is not None and (config.ignition in available or config.speed in available):
            detectors.append(trip)
        if config.stop.enabled and config.speed in available:
            detectors.append(StopDetector(config))
        if config.load.enabled and config.speed in available:
            load = LoadChangeDetector(config, available)
            if load.usable:
                detectors.append(load)
            else:
                log.warning("events: no suspension height or tire pressure signal in any "
                            "source: load changes are off")
        if config.battery.enabled:
            detectors.append(BatteryDetector(
                config, parked=lambda: trip is not None and not trip.active))
        # Trouble codes come from the diagnostics sources, when any reads them.
        detectors.append(DtcDetector())
        for trigger in config.triggers:
            if trigger.when:
                expression = self._expression_trigger(trigger, available)
                if expression is not None:
                    detectors.append(expression)
                continue
            if trigger.signal not in available:
                log.warning("events: trigger %s watches %s, which is in no source: off",
                            trigger.name, trigger.signal)
                continue
            detectors.append(TriggerDetector(trigger, sorted(available), self))
        return detectors

    def _expression_trigger(self, trigger: object, available: frozenset[str]
                            ) -> ExpressionTrigger | None:
        types = {key: SignalType(s.choices) for key, s in self.signals.items()}
        try:
            node = check(trigger.when, types)  # type: ignore[attr-defined]
        except ExpressionError as exc:
            log.warning("events: trigger %s is off: %s", trigger.name, exc)  # type: ignore[attr-defined]
            return None
        scaling = {key: Scaling(s.scale, s.offset, s.choices) for key, s in self.signals.items()}
        return ExpressionTrigger(trigger, sorted(available), self,  # type: ignore[arg-type]
                                 Evaluator(node, scaling), node)

    def stats(self) -> EngineStats:
        return EngineStats(tuple(d.name for d in self.detectors), dict(self.found))

    def take_over(self, previous: EventEngine) -> None:
        """Continue after a config reload: detectors start afresh, the readings go on."""
        self.latest = dict(previous.latest)
        self.found = dict(previous.found)

    def on_tick(self, time_ms: int) -> None:
        if not self.detectors:
            return
        self._read_new_records()
        now = _Readings(self, time_ms)
        for detector in self.detectors:
            try:
                events = detector.step(now)
            except Exception:  # a detector bug must not stop sampling
                log.exception("events: detector %s failed at %d", detector.name, time_ms)
                continue
            for event in events:
                self.found[event.type] = self.found.get(event.type, 0) + 1
                self._on_event(event)

    def _read_new_records(self) -> None:
        end = self._ring.written
        records = self._ring.columns(self._cursor, end)
        self._cursor = end
        if not len(records.signal) or not len(self._indices):
            return
        rows = np.flatnonzero(np.isin(records.signal, self._indices))
        instants: list[tuple[int, str, float]] = []  # for expression triggers, in time order
        for row in rows.tolist():
            field = records.field[row]
            if field not in (Field.VALUE, Field.SUM, Field.COUNT):
                continue
            signal = self._by_index[int(records.signal[row])]
            time_ms = int(records.time_ms[row])
            if field == Field.VALUE:
                self.latest[signal.key] = (time_ms, _physical(signal, records, row))
                instants.append((time_ms, signal.key, self.latest[signal.key][1]))
            elif field == Field.COUNT and row >= 1 and records.field[row - 1] == Field.SUM:
                count = int(records.value[row])
                if count:
                    mean = _physical_raw(signal, records, row - 1) / count
                    self.latest[signal.key] = (time_ms, mean * signal.scale + signal.offset)
                    instants.append((time_ms, signal.key, self.latest[signal.key][1]))
        self._feed_expressions(instants)

    def _feed_expressions(self, samples: list[tuple[int, str, float]]) -> None:
        """Hand each expression trigger the samples of its signals, instant by instant."""
        expressions = [d for d in self.detectors if isinstance(d, ExpressionTrigger)]
        if not expressions or not samples:
            return
        samples.sort(key=lambda sample: sample[0])  # stable: ring order within one ms
        for detector in expressions:
            inputs = set(detector.inputs)
            mine = [sample for sample in samples if sample[1] in inputs]
            start = 0
            while start < len(mine):
                time_ms = mine[start][0]
                end = start
                while end < len(mine) and mine[end][0] == time_ms:
                    end += 1
                try:
                    detector.observe(time_ms, [(key, value) for _, key, value in mine[start:end]])
                except Exception:  # a detector bug must not stop sampling
                    log.exception("events: detector %s failed at %d", detector.name, time_ms)
                start = end

    def emit(self, event: Event) -> None:
        """An event found outside the detectors (a fetch on demand, agent/events/fetch.py):
        through the same sink, so the same consent and location policy apply."""
        self.found[event.type] = self.found.get(event.type, 0) + 1
        self._on_event(event)

    def newest_ms(self) -> int | None:
        """The time of the newest record in the ring (None before the first)."""
        ring = self._ring
        if not ring.written:
            return None
        return int(ring.columns(ring.written - 1, ring.written).time_ms[0])

    def capture(self, keys: Sequence[str], from_ms: int,
                to_ms: int) -> Mapping[str, list[tuple[int, float]]]:
        """Every sample of `keys` the ring still holds with from_ms <= time <= to_ms."""
        indices = {self.signals[k].index: self.signals[k] for k in keys if k in self.signals}
        ring = self._ring
        records = ring.columns(max(0, ring.written - ring.capacity), ring.written)
        rows = np.flatnonzero(np.isin(records.signal, list(indices))
                              & (records.field == Field.VALUE)
                              & (records.time_ms >= from_ms) & (records.time_ms <= to_ms))
        samples: dict[str, list[tuple[int, float]]] = {}
        for row in rows.tolist():
            signal = indices[int(records.signal[row])]
            samples.setdefault(signal.key, []).append(
                (int(records.time_ms[row]), _physical(signal, records, row)))
        return samples


def _physical_raw(signal: PlannedSignal, records: RingSlice, row: int) -> float:
    bits = records.value[row]
    return float(bits.view(np.float64)) if signal.is_float else float(bits)


def _physical(signal: PlannedSignal, records: RingSlice, row: int) -> float:
    return _physical_raw(signal, records, row) * signal.scale + signal.offset
