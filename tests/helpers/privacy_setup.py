"""Capture everything a vehicle publishes, decode it, and a small drive with a GPS message."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import can
import cantools

from agent.events.codec import EventBody, open_event
from agent.output.batch import decompress_payload, open_batch
from agent.wire.body import BatchBody, SignalDef
from agent.wire.cose import verify
from agent.wire.keys import key_id, load_public_key


@dataclass
class Decoded:
    batches: list[BatchBody] = field(default_factory=list)
    events: list[EventBody] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    dictionary: dict[bytes, tuple[SignalDef, ...]] = field(default_factory=dict)
    # Every payload as plain bytes after verification and decompression: what a reader sees.
    plain: list[bytes] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    def keys_sent(self) -> set[str]:
        """Every signal key named in a dictionary or carrying samples."""
        keys = {d.key for dictionary in self.dictionary.values() for d in dictionary}
        for body in self.batches:
            dictionary = self.dictionary.get(body.dictionary_id, ())
            keys |= {dictionary[s.signal].key for s in body.series}
        return keys

    def samples(self, key: str) -> dict[int, float]:
        values = {}
        for body in self.batches:
            dictionary = self.dictionary[body.dictionary_id]
            for series in body.series:
                if dictionary[series.signal].key == key:
                    for t, raw in zip(series.times_ms, series.columns[0], strict=True):
                        values[t] = dictionary[series.signal].physical(raw)
        return values


def decode_all(messages: list[tuple[str, bytes]], public_key: Path) -> Decoded:
    key = load_public_key(public_key)
    keyring = {key_id(key): key}
    decoded = Decoded()
    for topic, payload in messages:
        decoded.topics.append(topic)
        if topic.endswith("/telemetry"):
            body = open_batch(payload, keyring)
            decoded.batches.append(body)
            if body.dictionary is not None:
                decoded.dictionary[body.dictionary_id] = body.dictionary
            decoded.plain.append(decompress_payload(verify(payload, keyring).payload))
        elif topic.endswith("/events"):
            decoded.events.append(open_event(payload, keyring))
            decoded.plain.append(decompress_payload(verify(payload, keyring).payload))
        elif topic.endswith("/status"):
            decoded.statuses.append(json.loads(payload))
            decoded.plain.append(payload)
        else:
            decoded.plain.append(payload)
    return decoded


GPS_DBC = """VERSION ""

NS_ :

BS_:

BU_: VCU ESP GPS BMS

BO_ 257 VCU_Status: 8 VCU
 SG_ IgnitionState : 0|2@1+ (1,0) [0|3] "" ESP

BO_ 417 ESP_VehicleSpeed: 8 ESP
 SG_ VehicleSpeed : 0|16@1+ (0.01,0) [0|300] "km/h" VCU

BO_ 800 GPS_Position: 8 GPS
 SG_ Latitude : 0|32@1- (1e-07,0) [-90|90] "deg" VCU
 SG_ Longitude : 32|32@1- (1e-07,0) [-180|180] "deg" VCU

BO_ 475 BMS_Pack: 8 BMS
 SG_ SOC : 0|10@1+ (0.1,0) [0|100] "%" VCU

VAL_ 257 IgnitionState 3 "Start" 2 "On" 1 "Accessory" 0 "Off" ;
"""

HOME = (48.1, 11.5)
GPS_START = 1_780_000_000.0


@dataclass(frozen=True)
class Point:
    t: float
    ignition: str
    speed: float
    lat: float
    lon: float


def gps_route(seconds: int = 200) -> list[Point]:
    """Parked at HOME with the ignition off, then east at 50 km/h with a 40 s stop in the
    middle, then parked (ignition off) 2 km away. One point per 0.1 s."""
    points = []
    distance = 0.0
    for step in range(seconds * 10):
        t = step / 10
        ignition = "On" if 10 <= t < 185 else "Off"
        speed = 50.0 if 15 <= t < 95 or 135 <= t < 180 else 0.0
        distance += speed / 3.6 * 0.1
        lon = HOME[1] + distance / (111_320.0 * math.cos(math.radians(HOME[0])))
        points.append(Point(GPS_START + t, ignition, speed, HOME[0], lon))
    return points


def write_gps_drive(directory: Path) -> tuple[Path, Path, list[Point]]:
    dbc = directory / "gps.dbc"
    dbc.write_text(GPS_DBC, encoding="utf-8")
    database = cantools.database.load_file(str(dbc))
    route = gps_route()
    log = directory / "gps.log"
    messages = {name: database.get_message_by_name(name) for name in
                ("VCU_Status", "ESP_VehicleSpeed", "GPS_Position", "BMS_Pack")}
    with can.Logger(str(log)) as writer:
        for point in route:
            for name, values in (("VCU_Status", {"IgnitionState": point.ignition}),
                                 ("ESP_VehicleSpeed", {"VehicleSpeed": point.speed}),
                                 ("GPS_Position", {"Latitude": point.lat,
                                                   "Longitude": point.lon}),
                                 ("BMS_Pack", {"SOC": 60.0})):
                message = messages[name]
                writer.on_message_received(can.Message(
                    timestamp=point.t, arbitration_id=message.frame_id,
                    data=message.encode(values), is_extended_id=False, channel="can0"))
    return dbc, log, route
