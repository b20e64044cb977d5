"""agent/ota/updater.py against a stand-in agent: a local reload is built, switched in, watched
for its grace period and acknowledged, or rolled back; a broken file changes nothing.
(Signed updates over a real broker: tests/integration/test_ota.py.)"""

from __future__ import annotations

import json
import queue
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config.schema import AgentConfig, load_config
from agent.errors import AgentError
from agent.ota.updater import ConfigUpdater
from agent.ota.verdict import HealthSnapshot, SourceCounters

REPO = Path(__file__).resolve().parents[3]


def write_config(path: Path, *, window: float = 60.0, vehicle: str = "v1",
                 valid: bool = True) -> Path:
    path.write_text(f"""
version = 1
[vehicle]
id = "{vehicle}"
[[sources]]
name = "can0"
type = "replay"
path = "{REPO / 'dbc' / 'drive.log.gz'}"
dbc = ["{REPO / 'dbc' / 'vehicle.dbc'}"]
[batch]
window = {window if valid else '"a minute"'}
[keys]
signing_key = "vehicle.key"
[uplink]
tls = false
[ota]
grace_period = 0.05
""", encoding="utf-8")
    return path


@dataclass
class Built:
    config: AgentConfig


class StandIn:
    """The agent as the updater sees it (its `Reloadable` protocol)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.switched: list[int] = []
        self.acks: queue.Queue[dict] = queue.Queue()
        self.reconnects = 0  # a source failing to open its bus: what the health watch judges

    def prepare(self, config: AgentConfig) -> Built:
        return Built(config)

    def switch(self, pipeline: Built) -> None:
        self.config = pipeline.config
        self.switched.append(int(pipeline.config.batch.window))

    def health_snapshot(self) -> HealthSnapshot:
        return HealthSnapshot({"can0": SourceCounters(0, self.reconnects, 0)}, samples=0,
                              uplink_connected=True, uplink_connects=1)

    def publish(self, leaf: str, payload: bytes) -> None:
        assert leaf == "config/ack"
        self.acks.put(json.loads(payload))


@pytest.fixture
def running(tmp_path):
    local = write_config(tmp_path / "config.toml")
    agent = StandIn(load_config(local))
    updater = ConfigUpdater(agent, local, tmp_path / "state")
    updater.start()
    yield agent, updater, local
    updater.stop()


def reload(updater: ConfigUpdater) -> tuple[str | None, str]:
    outcome: queue.Queue[tuple[str | None, str]] = queue.Queue()
    updater.reload_local(lambda error, message: outcome.put((error, message)))
    return outcome.get(timeout=10)


def test_an_edited_local_file_is_switched_in_watched_and_acknowledged(running):
    agent, updater, local = running
    write_config(local, window=30.0)

    error, message = reload(updater)

    assert error is None and "running version 1" in message
    assert agent.switched == [30]
    ack = agent.acks.get(timeout=10)
    assert (ack["outcome"], ack["version"]) == ("applied", 1)
    assert updater.last_outcome == ack


def test_a_broken_file_is_refused_and_nothing_changes(running):
    agent, updater, local = running
    write_config(local, valid=False)

    error, message = reload(updater)

    assert error is not None and "[batch] window" in error and message == ""
    assert agent.switched == []


def test_identity_changes_take_a_restart(running):
    agent, updater, local = running
    write_config(local, vehicle="v2")

    error, _ = reload(updater)

    assert error is not None and "[vehicle] changed; that takes a restart" in error
    assert agent.switched == []


def test_a_reload_that_breaks_the_bus_is_rolled_back_after_the_grace_period(running):
    agent, updater, local = running
    write_config(local, window=30.0)
    reconnects = iter([0, 3])  # before the switch, and after the grace period
    agent.health_snapshot = lambda: HealthSnapshot(  # type: ignore[method-assign]
        {"can0": SourceCounters(0, next(reconnects), 0)}, samples=0, uplink_connected=True,
        uplink_connects=1)

    error, _ = reload(updater)

    assert error is None
    ack = agent.acks.get(timeout=10)
    assert ack["outcome"] == "rolled-back" and "failed to open its bus 3 times" in ack["message"]
    assert agent.switched == [30, 60]  # and the previous config is back


def test_an_agent_error_while_building_is_the_reply(running):
    agent, updater, local = running

    def refuse(config: AgentConfig) -> Built:
        raise AgentError("the DBC does not load")

    agent.prepare = refuse  # type: ignore[method-assign]
    assert reload(updater) == ("the DBC does not load", "")
