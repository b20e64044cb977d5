import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sampling.ring import Field, Ring


def test_records_come_back_in_order_with_their_fields():
    ring = Ring(10)
    ring.append(1000, 3, Field.VALUE, -5)
    ring.append(1000, 4, Field.COUNT, 7)
    records = ring.read(0)
    assert [(r.time_ms, r.signal, r.field, r.value) for r in records] == [
        (1000, 3, Field.VALUE, -5), (1000, 4, Field.COUNT, 7)]


def test_overwrites_oldest_and_reports_how_many_a_reader_lost():
    ring = Ring(4)
    for value in range(10):
        ring.append(value, 0, Field.VALUE, value)
    assert ring.lost_since(0) == 6
    assert [r.value for r in ring.read(0)] == [6, 7, 8, 9]
    assert ring.lost_since(7) == 0
    assert [r.value for r in ring.read(7)] == [7, 8, 9]


def test_memory_bound_sets_capacity_and_storage_is_preallocated():
    ring = Ring.for_memory(1.0)
    assert ring.capacity == 1024 * 1024 // 19
    size_before = ring._value.buffer_info()
    for value in range(ring.capacity * 2):
        ring.append(value, 1, Field.VALUE, value)
    assert ring._value.buffer_info() == size_before
    assert ring.lost_since(0) == ring.capacity


def test_floats_and_64_bit_patterns_survive():
    ring = Ring(8, float_signals=frozenset({1}))
    ring.append(0, 1, Field.VALUE, -1.5)
    ring.append(0, 1, Field.COUNT, 3)
    ring.append(0, 2, Field.VALUE, 2**63 + 5)
    values = [r.value for r in ring.read(0)]
    assert values[0] == -1.5 and isinstance(values[0], float)
    assert values[1] == 3 and isinstance(values[1], int)
    assert values[2] % 2**64 == 2**63 + 5


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        Ring(0)


@settings(deadline=None, max_examples=200)
@given(capacity=st.integers(1, 40), before=st.integers(0, 90),
       samples=st.lists(st.one_of(
           st.tuples(st.integers(0, 2), st.floats(allow_nan=False) | st.integers(-5, 5)),
           st.tuples(st.integers(3, 9), st.integers(-(2**63), 2**64 - 1) | st.booleans())),
           max_size=60),
       time_ms=st.integers(0, 2**62))
def test_a_tick_written_at_once_is_the_same_records_appended_one_by_one(
        capacity: int, before: int, samples: list[tuple[int, int | float]],
        time_ms: int) -> None:
    """`append_values` against `append` one by one: the same columns, counts and wrap,
    whatever the ring held, floats (signals 0-2) as IEEE bits, unsigned 64-bit patterns."""
    floats = frozenset({0, 1, 2})
    rings = [Ring(capacity, floats), Ring(capacity, floats)]
    for ring in rings:
        for n in range(before):
            ring.append(n, 5, Field.MAX, n)
    for signal, value in samples:
        rings[0].append(time_ms, signal, Field.VALUE, value)
    rings[1].append_values(time_ms, [s for s, _ in samples], [v for _, v in samples])
    one, other = (ring.columns(0, ring.written) for ring in rings)
    assert rings[0].written == rings[1].written
    for name in ("time_ms", "signal", "field", "value"):
        assert getattr(one, name).tolist() == getattr(other, name).tolist(), name
