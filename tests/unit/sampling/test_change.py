"""Mode `change`: no change is lost, each at its frame time; deadband and heartbeat."""

from __future__ import annotations

import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sampling.change import ChangeFilter


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
