"""Mode `change`: no change is lost, each at its frame time; deadband and heartbeat."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.runtime.verify import expected_changes
from agent.sampling.change import ChangeFilter
from agent.sampling.frame_time import FrameTimeSampler
from agent.sampling.plan import PlannedSignal, build_plan
from agent.sampling.ring import Ring


def flags(frames: list[tuple[int, float]], deadband: float = 0.0, scale: float = 1.0,
          heartbeat_ms: int = 60000) -> list[bool]:
    rule = ChangeFilter(deadband, scale, heartbeat_ms)
    return [rule.observe(t, v) for t, v in frames]


def run(frames: list[tuple[int, float]], deadband: float = 0.0, scale: float = 1.0,
        heartbeat_ms: int = 60000) -> list[tuple[int, float]]:
    return [frame for frame, sampled in zip(frames, flags(frames, deadband, scale, heartbeat_ms),
                                            strict=True) if sampled]


def held_values(frames: list[tuple[int, float]], sampled: list[bool]) -> list[float]:
    """What a reader holding each sample until the next one sees at every frame."""
    value, held = None, []
    for (_, v), is_sample in zip(frames, sampled, strict=True):
        value = v if is_sample else value
        held.append(value)
    return held


frames_strategy = st.lists(st.tuples(st.integers(0, 50), st.integers(-3, 3)), max_size=200).map(
    lambda pairs: [(sum(step for step, _ in pairs[:n + 1]), value)
                   for n, (_, value) in enumerate(pairs)])


@settings(max_examples=300, deadline=None)
@given(frames_strategy, st.integers(1, 10_000))
def test_with_no_deadband_every_change_is_sampled_at_its_frame_time(frames, heartbeat):
    sampled = flags(frames, heartbeat_ms=heartbeat)
    for position, (previous, frame) in enumerate(itertools.pairwise([None, *frames])):
        if previous is None or previous[1] != frame[1]:
            assert sampled[position], f"the change at {frame} is lost"
    assert held_values(frames, sampled) == [v for _, v in frames]


@settings(max_examples=300, deadline=None)
@given(frames_strategy, st.floats(0.0, 5.0), st.sampled_from([1.0, 0.5, -2.0]))
def test_every_frame_is_within_the_deadband_of_the_sample_before_it(frames, deadband, scale):
    sampled = flags(frames, deadband, scale)
    for (_, v), value in zip(frames, held_values(frames, sampled), strict=True):
        assert abs(v - value) * abs(scale) <= deadband


def test_heartbeat_after_silence_and_exact_frame_times():
    frames = [(1003, 5), (2001, 5), (61003, 5), (61500, 6), (61700, 6)]
    assert run(frames, heartbeat_ms=60000) == [(1003, 5), (61003, 5), (61500, 6)]


def test_slow_drift_is_sampled_once_past_the_deadband():
    frames = [(t, 0.3 * t) for t in range(10)]
    assert run(frames, deadband=1.0) == [(0, 0.0), (4, 1.2), (8, 2.4)]


def test_nan_is_a_change_once():
    frames = [(0, 1.0), (1, math.nan), (2, math.nan), (3, 1.0)]
    assert [t for t, _ in run(frames)] == [0, 1, 3]


WINDOW_MS = 1000
DATABASE = load_dbc([Path(__file__).parents[3] / "dbc" / "vehicle.dbc"]).database


def sampler_samples(frames: list[tuple[int, int]], heartbeat_s: float
                    ) -> tuple[PlannedSignal, list[tuple[int, int]]]:
    """Frames of VCU_Status.Gear through the real FrameTimeSampler, a window sealed (flush with
    the next start) before the first frame of each later window, as the pipeline does."""
    plan = build_plan(SamplingConfig(signals=(SignalRule(
        "can0.VCU_Status.Gear", mode="change", heartbeat=heartbeat_s),)), {"can0": DATABASE})
    signal = plan.signals[0]
    ring = Ring.for_memory(4, frozenset())
    sampler = FrameTimeSampler(plan, ring)
    window_end = WINDOW_MS
    for t, raw in frames:
        while t >= window_end:
            sampler.flush(window_end)
            window_end += WINDOW_MS
        sampler.observe(signal.index, t, raw)
    records = ring.columns(0, ring.written)
    return signal, list(zip(records.time_ms.tolist(), records.value.tolist(), strict=True))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 700), st.integers(0, 2)), max_size=80).map(
    lambda pairs: [(sum(step for step, _ in pairs[:n + 1]), value)
                   for n, (_, value) in enumerate(pairs)]), st.sampled_from([0.3, 1.0, 60.0]))
def test_window_starts_carry_the_held_value_as_verify_expects(frames, heartbeat_s):
    signal, samples = sampler_samples(frames, heartbeat_s)
    assert samples == expected_changes(signal, frames, WINDOW_MS)
    for t, value in samples:  # a window-start sample holds the last frame before it
        if t % WINDOW_MS == 0 and (t, value) not in frames:
            assert value == [v for f, v in frames if f < t][-1]


def test_a_quiet_signal_is_one_sample_at_each_window_start():
    frames = [(t, 2) for t in range(10, 3000, 100)]
    _, samples = sampler_samples(frames, 60.0)
    assert samples == [(10, 2), (1000, 2), (2000, 2)]


def test_no_window_start_sample_after_a_silence_longer_than_the_heartbeat():
    _, samples = sampler_samples([(10, 1), (2500, 1)], 1.0)
    assert samples == [(10, 1), (2500, 1)]
