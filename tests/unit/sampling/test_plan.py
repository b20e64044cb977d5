import dataclasses
from pathlib import Path

import pytest

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.errors import ConfigError
from agent.sampling.plan import build_plan
from agent.sources.canbus import CanBusConfig, unreachable_fd_messages
from tests.helpers.dbc_fixtures import write_small_dbc


@pytest.fixture
def database(tmp_path):
    return load_dbc([write_small_dbc(tmp_path)]).database


def keys(plan):
    return [s.key for s in plan.signals]


def test_without_rules_every_signal_but_the_multiplexer_is_sampled(database):
    plan = build_plan(SamplingConfig(), {"can0": database})
    assert len(plan.signals) == 11
    assert "can0.Cells.Group" not in keys(plan)
    assert [s.index for s in plan.signals] == list(range(11))


def test_last_matching_rule_decides_and_exclude_drops(database):
    plan = build_plan(SamplingConfig(period=1.0, signals=(
        SignalRule("can0.Engine.*", period=0.5),
        SignalRule("can0.Engine.Speed", mode="stats", period=2.0),
        SignalRule("can0.Engine.Gear", exclude=True),
        SignalRule("can0.Nothing.*"),
    )), {"can0": database})
    assert {s.key: (s.period_ms, s.mode) for s in plan.signals} == {
        "can0.Engine.Speed": (2000, "stats"), "can0.Engine.Temp": (500, "last")}
    assert plan.frame_ids("can0") == {0x100}
    assert plan.unmatched == ("can0.Nothing.*",)


def test_signal_metadata_comes_from_the_dbc(database):
    plan = build_plan(SamplingConfig(), {"can0": database})
    by_key = {s.key: s for s in plan.signals}
    assert by_key["can0.Engine.Gear"].choices == {0: "P", 1: "R", 2: "N", 3: "D"}
    assert by_key["can0.Engine.Temp"].offset == -40
    assert by_key["can0.Motor.Torque"].is_float
    assert by_key["can0.Chassis.Height"].unit == "mm"


def test_a_plan_selecting_nothing_is_an_error(database):
    with pytest.raises(ConfigError, match="selects no signal"):
        build_plan(SamplingConfig(signals=(SignalRule("x.*"),)), {"can0": database})


def test_two_sources_keep_their_signals_apart(database):
    plan = build_plan(SamplingConfig(signals=(SignalRule("can1.Engine.Speed"),
                                              SignalRule("can0.Motor.*"))),
                      {"can0": database, "can1": database})
    assert keys(plan) == ["can0.Motor.Torque", "can1.Engine.Speed"]
    assert plan.frame_ids("can1") == {0x100}


def test_planned_fd_messages_on_a_classic_bus_are_named():
    vehicle = load_dbc([Path(__file__).resolve().parents[3] / "dbc" / "vehicle.dbc"]).database
    plan = build_plan(SamplingConfig(), {"can0": vehicle})
    fd_names = sorted(m.name for m in vehicle.messages if m.is_fd)
    assert fd_names  # the example DBC has one, like a real car's ADAS bus
    classic = CanBusConfig(name="can0", type="socketcan", channel="can0")
    assert unreachable_fd_messages(classic, vehicle, plan.frame_ids("can0")) == fd_names
    for reachable in (dataclasses.replace(classic, fd=True),
                      dataclasses.replace(classic, type="virtual")):
        assert unreachable_fd_messages(reachable, vehicle, plan.frame_ids("can0")) == []
    without_fd = {m.frame_id for m in vehicle.messages if not m.is_fd}
    assert unreachable_fd_messages(classic, vehicle, without_fd) == []
