"""Hand-made snapshots of a running agent (agent/runtime/status.py's `AgentSnapshot`), for
the status documents and the screens `edge-agent diag` draws from them, no agent running."""

from __future__ import annotations

import time
from pathlib import Path

from agent.config.schema import (
    AgentConfig,
    KeysConfig,
    StateConfig,
    UplinkConfig,
    VehicleConfig,
)
from agent.decoding.frames import StoreStats
from agent.events.engine import EngineStats
from agent.events.sink import EventDelivery
from agent.output.batch import BatcherStats
from agent.output.spool import SpoolStats
from agent.output.uplink import UplinkStats
from agent.privacy.consent import Consent
from agent.runtime import clock
from agent.runtime.status import AgentSnapshot, PrivacyStats
from agent.sampling.ring import RingStats
from agent.sources.canbus import CanBusConfig
from agent.sources.gpsd import GpsdConfig
from agent.sources.health import SourceHealth, SourceStats
from agent.sources.serial_sensors import SerialConfig


def source(name: str, type_: str, where: str, *, age: float | None = 1.0,
           **counters: int) -> SourceStats:
    health = SourceHealth()
    for key, value in counters.items():
        if hasattr(health, key):
            setattr(health, key, value)
        else:
            health.state[key] = value
    return SourceStats(name=name, type=type_, where=where, value_source=type_ in ("gpsd", "serial"),
                       counters=health.counters(), last_failure="",
                       last_frame_time=0.0 if age is None else time.time() - age,
                       last_received=0.0 if age is None else time.monotonic() - age,
                       stale_after=10.0, finished=False)


def make_snapshot(tmp_path: Path) -> AgentSnapshot:
    """A healthy agent: a bus, gpsd and a tire sensor, connected, nothing lost."""
    config = AgentConfig(
        path=tmp_path / "config.toml", vehicle=VehicleConfig("v1"),
        sources=(CanBusConfig("can0", "socketcan", channel="can0"), GpsdConfig("gps", "gpsd"),
                 SerialConfig("tpms", "serial", port="/dev/ttyTPMS", protocol="tpms-binary")),
        keys=KeysConfig(tmp_path / "vehicle.key"), state=StateConfig(tmp_path),
        uplink=UplinkConfig(host="broker.example", port=1883, tls=False))
    return AgentSnapshot(
        config=config, boot=bytes(16), uptime_s=12.34, last_update=None,
        sources=(source("can0", "socketcan", "can0", frames=500),
                 source("gps", "gpsd", "127.0.0.1:2947", connected=1, fix_mode=3),
                 source("tpms", "serial", "/dev/ttyTPMS (tpms-binary, 9600 baud)",
                        connected=1)),
        frame_rates={"can0": 49.96},
        stores={"can0": StoreStats(filters=(0x101, 0x2A0),
                                   unknown_ids=((0x7FF, 9), (0x100, 3), (0x200, 1))),
                "gps": StoreStats((), ()), "tpms": StoreStats((), ())},
        ring=RingStats(capacity=1000, written=250),
        batches=BatcherStats(sealed=3, signals=40, ring_lost=0, clock=clock.NTP),
        spool=SpoolStats(depth=1, bytes=900, oldest_created=time.time() - 5, evicted=0,
                         not_kept=0, moved_aside=0),
        spool_max_bytes=64 * 2**20,
        uplink=UplinkStats(connected=True, published=3, acked=2, dropped=0, connects=1,
                           connect_failures=0, refused=0, last_puback=time.time() - 2),
        privacy=PrivacyStats(consent=Consent("full", 0, "config"), signals_sent=40,
                             signals_planned=43, dropped_on_downgrade=0,
                             events=EngineStats(("trip", "stop"), {"trip_start": 1}),
                             delivery=EventDelivery(sent=1, withheld={}, positions_withheld=2,
                                                   samples_withheld=7)))
