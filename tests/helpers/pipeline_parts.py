"""An agent config and the shared parts a pipeline is built on, made by hand: the wiring built
for real (agent/runtime/pipeline.py), without threads or a broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.config.schema import (
    AgentConfig,
    BatchConfig,
    KeysConfig,
    PrivacyConfig,
    SamplingConfig,
    SignalRule,
    StateConfig,
    UplinkConfig,
    VehicleConfig,
)
from agent.events.sink import EventCounters, EventSequence
from agent.output.batch import CONTENT_TYPE
from agent.output.spool import Spool, SpooledBatch
from agent.output.uplink import UplinkStats
from agent.runtime.pipeline import HealthCounters, SharedParts
from agent.sampling.ring import Ring
from agent.sources.health import SourceHealth
from agent.sources.replay import ReplayConfig
from agent.wire.cose import Signer
from agent.wire.keys import load_private_key
from tests.helpers.agent_setup import BUNDLED_DBC, BUNDLED_DRIVE


def agent_config(directory: Path, *, signals: tuple[str, ...] = ("can0.ESP_VehicleSpeed.*",),
                 batch: BatchConfig = BatchConfig(), consent: str = "full") -> AgentConfig:
    """Vehicle v1 replaying the bundled drive as `can0`, sampling the `signals` rules, without
    TLS; its key `directory`/vehicle.key (the test makes it), its state in `directory`."""
    return AgentConfig(
        path=directory / "config.toml", vehicle=VehicleConfig("v1"),
        sources=(ReplayConfig("can0", "replay", dbc=(BUNDLED_DBC,), path=BUNDLED_DRIVE),),
        keys=KeysConfig(directory / "vehicle.key"), state=StateConfig(directory),
        sampling=SamplingConfig(signals=tuple(SignalRule(rule) for rule in signals)),
        batch=batch, uplink=UplinkConfig(tls=False), privacy=PrivacyConfig(consent=consent))


def shared_parts(directory: Path, spool: Spool, submit: Callable[[SpooledBatch], None], *,
                 ring_mb: float) -> SharedParts:
    """The parts as the daemon makes them, but for an uplink that never connected: batches
    signed with `directory`/vehicle.key, handed to `submit`."""
    healths: dict[str, SourceHealth] = {}
    idle = UplinkStats(connected=False, published=0, acked=0, dropped=0, connects=0,
                       connect_failures=0, refused=0, last_puback=0.0)
    return SharedParts(ring=Ring.for_memory(ring_mb), spool=spool,
                       signer=Signer(load_private_key(directory / "vehicle.key"), CONTENT_TYPE),
                       boot=bytes(16), healths=healths,
                       health=HealthCounters(healths, lambda: idle, spool),
                       event_counters=EventCounters(), event_seq=EventSequence(), submit=submit)
