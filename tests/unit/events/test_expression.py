"""Trigger expressions: the grammar (hypothesis: never crashes, round trip, errors with their
position), the type check with "did you mean", and firing exactly at the frames where the
expression becomes true, through the agent's own path (FrameStore → change sampling → ring →
EventEngine), against a plain evaluation over the raw frames."""

from __future__ import annotations

import math
from pathlib import Path

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.schema import (
    BatteryEventConfig,
    EventsConfig,
    LoadEventConfig,
    LocationConfig,
    SamplingConfig,
    SignalRule,
    StopEventConfig,
    TriggerConfig,
    TripEventConfig,
)
from agent.decoding.dbc import load_dbc
from agent.decoding.frames import FrameStore
from agent.events.engine import EventEngine
from agent.events.expression import (
    Binary,
    Changed,
    ExpressionError,
    For,
    Label,
    Node,
    Number,
    Rising,
    Signal,
    SignalType,
    Unary,
    Window,
    check,
    parse,
)
from agent.events.trigger import ExpressionTrigger
from agent.sampling.frame_time import FrameTimeSampler
from agent.sampling.plan import build_plan
from agent.sampling.ring import Ring
from agent.sampling.sampler import Sampler
from agent.sources.health import SourceHealth

REPO = Path(__file__).resolve().parents[3]
SPEED = "can0.ESP_VehicleSpeed.VehicleSpeed"
BRAKE = "can0.ESP_Brake.BrakePressure"
GEAR = "can0.VCU_Status.Gear"
TYPES = {SPEED: SignalType(), BRAKE: SignalType(),
         GEAR: SignalType({0: "P", 1: "R", 2: "N", 3: "D", 7: "Invalid"})}


# --- grammar -----------------------------------------------------------------------------

def strip(node: Node) -> object:
    """The tree without positions, for comparing a parse with the tree it came from."""
    if isinstance(node, Number | Label | Signal):
        return (type(node).__name__, getattr(node, "value", None) or getattr(node, "text", None)
                or getattr(node, "key", None))
    return (type(node).__name__, *(strip(getattr(node, name)) if isinstance(
        getattr(node, name), Node.__args__) else getattr(node, name)  # type: ignore[attr-defined]
        for name in node.__dataclass_fields__ if name != "at"))


def render(node: Node) -> str:
    if isinstance(node, Number):
        return repr(node.value)
    if isinstance(node, Label):
        return f'"{node.text}"'
    if isinstance(node, Signal):
        return node.key
    if isinstance(node, Unary):
        return f"({node.op} {render(node.operand)})"
    if isinstance(node, Binary):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    if isinstance(node, Rising):
        return f"rising({render(node.operand)})"
    if isinstance(node, Changed):
        return f"changed({node.signal.key})"
    if isinstance(node, Window):
        return f"{node.function}({node.signal.key}, {node.duration_ms} ms)"
    assert isinstance(node, For)
    return f"({render(node.operand)} for {node.duration_ms} ms)"


signals = st.sampled_from([SPEED, BRAKE, GEAR]).map(lambda key: Signal(key, 0))
numbers = st.floats(0, 1e6, allow_nan=False).map(lambda value: Number(value, 0))
durations = st.integers(1, 100_000)
numeric = st.recursive(
    st.one_of(numbers, signals,
              st.builds(Window, st.sampled_from(["avg", "min", "max"]), signals, durations,
                        st.just(0))),
    lambda inner: st.one_of(
        st.builds(Binary, st.sampled_from(["+", "-", "*", "/"]), inner, inner, st.just(0)),
        st.builds(Unary, st.just("-"), inner, st.just(0))), max_leaves=6)
conditions = st.recursive(
    st.one_of(st.builds(Binary, st.sampled_from(["<", "<=", ">", ">=", "==", "!="]), numeric,
                        numeric, st.just(0)),
              st.builds(Changed, signals, st.just(0))),
    lambda inner: st.one_of(
        st.builds(Binary, st.sampled_from(["and", "or"]), inner, inner, st.just(0)),
        st.builds(Unary, st.just("not"), inner, st.just(0)),
        st.builds(Rising, inner, st.just(0)),
        st.builds(For, inner, durations, st.just(0))), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(conditions)
def test_rendered_trees_parse_back_to_themselves_and_type_check(tree):
    text = render(tree)
    assert strip(parse(text)) == strip(tree)
    check(text, TYPES)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('abcdefgrisn_.0123456789 ()<>=!+-*/,"for and')),
               max_size=40) | st.text(max_size=40))
def test_any_text_parses_or_says_where_it_is_wrong(text):
    try:
        parse(text)
    except ExpressionError as exc:
        assert 0 <= exc.position <= len(text)
        assert f"column {exc.position + 1}" in str(exc)


@pytest.mark.parametrize("text, column, words", [
    ("x > ", 5, "expected a value"),
    ("x > 130 and", 12, "expected a value"),
    ("rising(x > 1", 13, "expected ')'"),
    ("x > 130 for 2", 14, "unit"),
    ("avg(x) > 3", 6, "expected ','"),
    ("speed > 1 $", 11, "unexpected '$'"),
    ("eval(x)", 1, "unknown function"),
    ("x > 1 for 0 s", 11, "at least 1 ms"),
])
def test_syntax_errors_name_the_column(text, column, words):
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    assert words in str(caught.value)
    assert caught.value.position + 1 == column, str(caught.value)


def test_type_errors_and_did_you_mean():
    with pytest.raises(ExpressionError, match=r"unknown signal 'VehicleSpeed'.*did you mean "
                                              r"can0.ESP_VehicleSpeed.VehicleSpeed"):
        check("VehicleSpeed > 130", TYPES)
    with pytest.raises(ExpressionError, match=r"did you mean can0\.ESP_Brake\.BrakePressure"):
        check("can0.ESP_Brake.BrakePresure > 30", TYPES)
    with pytest.raises(ExpressionError, match="not a condition"):
        check(f"{SPEED} + 1", TYPES)
    with pytest.raises(ExpressionError, match="'and' joins conditions"):
        check(f"{SPEED} and {BRAKE} > 1", TYPES)
    with pytest.raises(ExpressionError, match=r"no value labelled 'Drive' \(its labels: D, "):
        check(f'{GEAR} == "Drive"', TYPES)
    with pytest.raises(ExpressionError, match="only be compared with == or !="):
        check(f'{GEAR} > "D"', TYPES)
    node = check(f'({SPEED} > 130 and {BRAKE} > 30 for 2 s) or rising({GEAR} == "D") '
                 f'or changed({GEAR}) or avg({SPEED}, 10 s) > 100', TYPES)
    assert isinstance(node, Binary) and node.op == "or"


# --- firing exactly where the expression becomes true ------------------------------------

T0_MS = 1_780_300_800_000
EXPRESSIONS = {
    "hard brake at speed": (f"{SPEED} > 130 and {BRAKE} > 30",
                            lambda v: _and(_gt(v[SPEED], 130), _gt(v[BRAKE], 30))),
    "into drive": (f'rising({GEAR} == "D")', None),
    "gear change": (f"changed({GEAR})", None),
}


def _gt(value: float | None, limit: float) -> bool | None:
    return None if value is None else value > limit


def _and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def plain_firings(frames: list[tuple[int, str, float]], name: str) -> list[int]:
    """The plain evaluation: hold each signal's newest frame value, evaluate at every frame,
    fire where the condition becomes true (hold 0: re-armed as soon as it is false)."""
    values: dict[str, float | None] = {SPEED: None, BRAKE: None, GEAR: None}
    fired, armed, previous_drive = [], True, False
    for time_ms, key, value in frames:
        before = values[key]
        values[key] = value
        if name == "hard brake at speed":
            condition = EXPRESSIONS[name][1](values)  # type: ignore[misc]
        elif name == "into drive":
            drive = values[GEAR] == 3
            condition, previous_drive = drive and not previous_drive, drive
        else:
            condition = key == GEAR and before is not None and before != value
        if condition is None:
            continue
        if condition and armed:
            fired.append(time_ms)
            armed = False
        elif not condition:
            armed = True
        if name != "hard brake at speed":  # a change or an edge is true only at its frame
            armed = True
    return fired


def agent_firings(frames: list[tuple[int, str, float]]) -> dict[str, list[int]]:
    database = load_dbc([REPO / "dbc" / "vehicle.dbc"]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.*", exclude=True), *(SignalRule(key, mode="change", heartbeat=3600)
                                              for key in (SPEED, BRAKE, GEAR)))),
        {"can0": database})
    ring = Ring(200_000, frozenset(s.index for s in plan.signals if s.is_float))
    config = EventsConfig(
        enabled=True, trip=TripEventConfig(enabled=False), stop=StopEventConfig(enabled=False),
        load=LoadEventConfig(enabled=False), battery=BatteryEventConfig(enabled=False),
        triggers=tuple(TriggerConfig(name=name, when=text, min_interval=0.0, post=0.0,
                                     lookback=1.0) for name, (text, _) in EXPRESSIONS.items()))
    events: list = []
    engine = EventEngine(config, LocationConfig(), plan, ring, events.append)
    store = FrameStore(database, plan.for_source("can0"), SourceHealth(),
                       FrameTimeSampler(plan, ring))
    sampler = Sampler(plan, ring, {"can0": store}, 60_000, lambda t0, t1: None,
                      on_tick=engine.on_tick)
    raw = {SPEED: 0, BRAKE: 0, GEAR: 0}
    for time_ms, key, value in frames:
        message = database.get_message_by_name(key.split(".")[1])
        signal = message.get_signal_by_name(key.split(".")[2])
        raw[key] = round(value / signal.scale)
        data = message.encode({s.name: raw.get(f"can0.{message.name}.{s.name}", 0)
                               for s in message.signals}, scaling=False)
        timestamp = (time_ms + 0.5) / 1000  # exactly `time_ms` once truncated to ms
        sampler.advance(timestamp)
        store.accept(can.Message(arbitration_id=message.frame_id, data=data,
                                 timestamp=timestamp, is_extended_id=False))
    sampler.advance((frames[-1][0] + 2000) / 1000 if frames else T0_MS / 1000)
    found = {d.name.removeprefix("trigger:"): d.fired for d in engine.detectors
             if isinstance(d, ExpressionTrigger)}
    assert sorted(e.time_ms for e in events) == sorted(t for f in found.values() for t in f)
    return found


traffic = st.lists(st.tuples(
    st.integers(1, 700),
    st.one_of(st.tuples(st.just(SPEED), st.sampled_from([0.0, 100.0, 129.99, 130.0, 130.01,
                                                        150.0, 200.5])),
              st.tuples(st.just(BRAKE), st.sampled_from([0.0, 29.9, 30.0, 30.1, 80.0])),
              st.tuples(st.just(GEAR), st.sampled_from([0.0, 1.0, 2.0, 3.0])))),
    min_size=1, max_size=80).map(
    lambda steps: [(T0_MS + sum(s for s, _ in steps[:n + 1]), key, value)
                   for n, (_, (key, value)) in enumerate(steps)])


@settings(max_examples=25, deadline=None)
@given(traffic)
def test_expression_triggers_fire_exactly_where_the_plain_evaluation_becomes_true(frames):
    found = agent_firings(frames)
    for name in EXPRESSIONS:
        assert found[name] == plain_firings(frames, name), name


def test_a_hard_brake_at_speed_fires_once_at_its_frame():
    frames = [(T0_MS + 10, SPEED, 150.0), (T0_MS + 1234, BRAKE, 45.0),
              (T0_MS + 1500, BRAKE, 50.0), (T0_MS + 2600, BRAKE, 0.0),
              (T0_MS + 4321, BRAKE, 31.0)]
    assert agent_firings(frames)["hard brake at speed"] == [T0_MS + 1234, T0_MS + 4321]
    assert not math.isnan(0.0)
