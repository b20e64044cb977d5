"""The detectors on simulated drives: noise, slopes, dropouts, flapping signals."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path

import cbor2
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from agent.config.schema import (
    BatteryEventConfig,
    EventsConfig,
    LoadEventConfig,
    SamplingConfig,
    TriggerConfig,
)
from agent.decoding.dbc import load_dbc
from agent.errors import WireFormatError
from agent.events.battery import BatteryDetector
from agent.events.codec import MAX_DATA_DEPTH, decode_event
from agent.events.engine import event_inputs
from agent.events.latch import Latch
from agent.events.load import LoadChangeDetector
from agent.events.stop import StopDetector
from agent.events.trigger import TriggerDetector
from agent.events.trip import TripDetector
from agent.sources.gpsd_json import GPS_CATALOGUE
from agent.sources.sensor_protocols import TPMS_CATALOGUE
from agent.wire.body import MAX_TIME_MS

CONFIG = EventsConfig(enabled=True)
LOAD = CONFIG.load
SPEED, IGNITION = CONFIG.speed, CONFIG.ignition
AVAILABLE = frozenset({SPEED, IGNITION, *LOAD.heights, *LOAD.pressures,
                       *LOAD.tire_temperatures})


class Tick:
    """One sampling tick's readings, as the engine gives them."""

    def __init__(self, time_ms: int, values: dict[str, float], labels: dict[str, str]) -> None:
        self.time_ms = time_ms
        self._values = values
        self._labels = labels

    def value(self, key: str) -> float | None:
        return self._values.get(key)

    def label(self, key: str) -> str | None:
        return self._labels.get(key)

    def position(self) -> tuple[float, float] | None:
        return None


def shop_stop(*, load_kg: float = 160.0, slope_mm: float = 0.0, noise: float = 0.0,
              dropout: float = 0.0, seed: int = 1, dwell: int = 60,
              cooling: float = 0.0) -> Iterator[Tick]:
    """Drive 20 s, stop `dwell` s (load added mid-stop), drive 20 s; 1 Hz."""
    rng = random.Random(seed)
    for second in range(20 + dwell + 20):
        stopped = 20 <= second < 20 + dwell
        loaded = (stopped and second >= 20 + dwell // 2) or second >= 20 + dwell
        speed = 0.0 if stopped else 50.0
        kg = load_kg if loaded else 0.0
        values = {SPEED: speed}
        for key in LOAD.heights:
            values[key] = slope_mm - 0.14 * kg + rng.gauss(0, noise)
        for key, temperature in zip(LOAD.pressures, LOAD.tire_temperatures, strict=True):
            tire_c = 30.0 - (cooling * (second - 20) / dwell if stopped else 0.0)
            hot = (250 + 101.325) * (tire_c + 273.15) / (30.0 + 273.15) - 101.325
            values[key] = round(hot + 0.025 * kg + rng.gauss(0, noise / 2))
            values[temperature] = round(tire_c)
        values = {k: v for k, v in values.items() if k == SPEED or rng.random() >= dropout}
        yield Tick(second * 1000, values, {IGNITION: "On"})


def run(detector, ticks) -> list:
    return [event for tick in ticks for event in detector.step(tick)]


@pytest.mark.parametrize("case", [
    {}, {"slope_mm": -35.0}, {"slope_mm": 40.0, "noise": 2.0}, {"noise": 3.0, "seed": 7},
    {"dropout": 0.3, "noise": 1.5}, {"cooling": 8.0},
])
def test_load_change_is_found_on_noisy_sloped_drives_with_dropouts(case):
    events = run(LoadChangeDetector(CONFIG, AVAILABLE), shop_stop(**case))
    assert len(events) == 1
    data = events[0].data
    assert data["direction"] == "loaded"
    assert data["height_change_mm"] == pytest.approx(-22.4, abs=2.5)
    assert data["pressure_change_kpa"] == pytest.approx(4.0, abs=1.5)


@pytest.mark.parametrize("case", [
    {"load_kg": 0.0}, {"load_kg": 0.0, "slope_mm": -50.0, "noise": 3.0},
    {"load_kg": 0.0, "cooling": 15.0}, {"load_kg": 30.0},
])
def test_no_load_change_without_a_real_load(case):
    assert run(LoadChangeDetector(CONFIG, AVAILABLE), shop_stop(**case)) == []


def test_unloading_is_reported_as_unloaded():
    ticks = list(shop_stop())
    # The same stop backwards in time: the load comes off.
    reversed_ticks = [Tick(i * 1000, t._values, t._labels) for i, t in enumerate(reversed(ticks))]
    events = run(LoadChangeDetector(CONFIG, AVAILABLE), reversed_ticks)
    assert [e.data["direction"] for e in events] == ["unloaded"]


def test_a_short_stop_is_neither_a_stop_nor_a_load_change():
    assert run(StopDetector(CONFIG), shop_stop(dwell=20)) == []
    assert run(LoadChangeDetector(CONFIG, AVAILABLE), shop_stop(dwell=20)) == []


def test_stop_reports_dwell_and_survives_a_speed_dropout():
    ticks = [t for t in shop_stop() if not 40 <= t.time_ms // 1000 < 50]
    events = run(StopDetector(CONFIG), ticks)
    assert [(e.type, e.data["dwell_s"]) for e in events] == [("stop", 60.0)]


def drive(ignition: Callable[[int], str], seconds: int, speed: float = 30.0) -> Iterator[Tick]:
    for second in range(seconds):
        label = ignition(second)
        yield Tick(second * 1000, {SPEED: speed if label == "On" else 0.0}, {IGNITION: label})


def test_trip_from_ignition_with_distance_from_speed():
    events = run(TripDetector(CONFIG, frozenset({SPEED, IGNITION})),
                 drive(lambda s: "On" if 10 <= s < 130 else "Off", 150, speed=36.0))
    assert [e.type for e in events] == ["trip_start", "trip_end"]
    assert events[1].data["duration_s"] == 120.0
    assert events[1].data["distance_km"] == pytest.approx(1.2, abs=0.02)
    assert events[1].data["distance_source"] == "speed"


def test_a_flapping_ignition_causes_no_event_storm():
    flapping = drive(lambda s: "On" if s % 2 else "Off", 600)
    assert run(TripDetector(CONFIG, frozenset({SPEED, IGNITION})), flapping) == []
    # Flapping within a trip (a bad contact) does not cut it into pieces.
    bad_contact = drive(lambda s: "Off" if (s > 100 and s % 7 == 0) or s >= 300 else "On", 320)
    events = run(TripDetector(CONFIG, frozenset({SPEED, IGNITION})), bad_contact)
    assert [e.type for e in events] == ["trip_start", "trip_end"]


def test_battery_spread_flapping_around_the_limit_fires_once_per_interval():
    config = EventsConfig(enabled=True, battery=BatteryEventConfig(min_interval=600.0))
    detector = BatteryDetector(config, parked=lambda: False)
    rng = random.Random(3)
    ticks = (Tick(s * 1000, {config.battery.cell_spread: 50 + rng.choice((-3, 3))}, {})
             for s in range(1800))
    events = run(detector, ticks)
    assert 1 <= len(events) <= 3
    assert all(e.data["condition"] == "cell_spread" for e in events)


def test_soc_dropping_while_parked_is_reported_once():
    config = EventsConfig(enabled=True)
    detector = BatteryDetector(config, parked=lambda: True)
    ticks = (Tick(s * 1000, {config.battery.soc: 60.0 - s * 0.01}, {}) for s in range(1000))
    events = run(detector, ticks)
    assert [e.data["condition"] for e in events] == ["soc_drop_parked"]
    assert events[0].data["drop"] >= 2.0


class RingRecorder:
    def __init__(self) -> None:
        self.samples: dict[str, list[tuple[int, float]]] = {}

    def capture(self, keys, from_ms, to_ms):
        return {k: [(t, v) for t, v in rows if from_ms <= t <= to_ms]
                for k, rows in self.samples.items() if k in keys}


def test_trigger_captures_lookback_and_post_window_once():
    recorder = RingRecorder()
    trigger = TriggerConfig(name="overspeed", signal=SPEED, above=130.0, lookback=10.0,
                            post=5.0, min_interval=300.0)
    detector = TriggerDetector(trigger, [SPEED], recorder)
    speeds = [100.0] * 30 + [135.0, 125.0] * 20 + [100.0] * 30
    events = []
    for second, speed in enumerate(speeds):
        recorder.samples.setdefault(SPEED, []).append((second * 1000, speed))
        events += detector.step(Tick(second * 1000, {SPEED: speed}, {}))
    assert len(events) == 1
    captured = events[0].data["samples"][SPEED]
    assert [t for t, _ in captured] == list(range(20_000, 35_001, 1000))


def test_latch_needs_the_condition_held_and_cleared():
    latch = Latch(hold=3.0, min_interval=0.0)
    fired = [latch.update(s * 1000, s % 2 == 0) for s in range(20)]
    assert not any(fired)
    fired = [latch.update(s * 1000, True) for s in range(20, 30)]
    assert fired.count(True) == 1
    assert LoadEventConfig().height_threshold_mm > 0


def test_event_inputs_come_from_dbc_signals_and_sensor_catalogues_alike():
    vehicle_dbc = Path(__file__).resolve().parents[3] / "dbc" / "vehicle.dbc"

    wheels = ("FL", "FR", "RL", "RR")
    config = EventsConfig(
        enabled=True, speed="gps.speed",
        load=LoadEventConfig(pressures=tuple(f"tpms.{w}.pressure" for w in wheels),
                             tire_temperatures=tuple(f"tpms.{w}.temperature" for w in wheels)))
    databases = {"can0": load_dbc((vehicle_dbc,)).database, "gps": GPS_CATALOGUE,
                 "tpms": TPMS_CATALOGUE}
    keys = {signal.key for signal in event_inputs(config, databases, SamplingConfig())}
    assert {"gps.speed", "tpms.FL.pressure", "tpms.RR.temperature"} <= keys
    assert config.ignition in keys  # still from the DBC
    assert not any(key.startswith("tpms.") and key.endswith(".battery") for key in keys)
    without_sensors = event_inputs(config, {"can0": databases["can0"]}, SamplingConfig())
    assert not any(s.key.startswith(("gps.", "tpms.")) for s in without_sensors)


# --- the event document on the wire (agent/events/codec.py) --------------------------------

def _event_document(**fields: object) -> bytes:
    """A trip_end event's payload as the agent sends it, with `fields` replaced."""
    document = {"v": 1, "veh": "v1", "boot": bytes(16), "seq": 0, "type": "trip_end",
                "t": 1_800_000_000_000, "clk": "ntp", "cfg": 1,
                "prv": {"consent": "full", "ver": 1},
                "data": {"distance_km": 12.5, "changes": {"can0.H": [1, -2.5, None, True]}},
                "pos": {"end": [48.1, 11.5]}, **fields}
    return zstandard.ZstdCompressor().compress(cbor2.dumps(document))


def test_an_event_as_the_agent_sends_it_decodes():
    event = decode_event(_event_document())
    assert decode_event(_event_document(data={"x": _nested(MAX_DATA_DEPTH - 1)})).data["x"]
    assert event.time_ms == 1_800_000_000_000 and event.data["changes"]["can0.H"][1] == -2.5
    assert event.privacy == {"consent": "full", "ver": 1}


huge = st.integers(min_value=10**4300, max_value=10**5000)


def _nested(depth: int) -> list:
    """[[...[1]...]], `depth` lists deep."""
    value: list = [1]
    for _ in range(depth - 1):
        value = [value]
    return value


# Found by fuzzing (#20): the backend prints an event's time as a date and its data as JSON
# (sorted keys), and a time no date can name, an integer of thousands of digits or keys of
# mixed types raised there (ValueError, OverflowError, OSError, TypeError) after decoding
# had accepted the event. Decoding now refuses them (docs/wire-format.md §4.8).
@given(fields=st.one_of(
    st.fixed_dictionaries({"t": st.integers(max_value=-1) | st.integers(
        min_value=MAX_TIME_MS + 1) | huge}),
    st.fixed_dictionaries({"seq": st.integers(max_value=-1) | st.integers(min_value=2**64)}),
    st.fixed_dictionaries({"cfg": huge | huge.map(lambda n: -n)}),
    st.fixed_dictionaries({"v": huge | st.just(1.0) | st.just(True)}),
    st.fixed_dictionaries({"prv": st.just(None) | st.fixed_dictionaries(
        {"consent": st.just("full"), "ver": huge})}),
    st.fixed_dictionaries({"data": st.one_of(
        st.dictionaries(st.integers() | st.binary(), st.integers(), min_size=1).map(
            lambda keys: {"a": 1, **keys}),
        st.builds(lambda n: {"distance_km": n}, huge),
        st.builds(lambda n: {"samples": {"k": [[0, n]]}}, huge | huge.map(lambda n: -n)),
        st.sampled_from([{"x": b"bytes"}, {"x": {1, 2}}, {"x": cbor2.CBORTag(99, 1)},
                         {"x": _nested(MAX_DATA_DEPTH)}, [1, 2]]))})))
def test_event_fields_nothing_after_decoding_could_use_are_rejected(fields):
    with pytest.raises(WireFormatError) as caught:
        decode_event(_event_document(**fields))
    assert 0 < len(str(caught.value)) < 400
