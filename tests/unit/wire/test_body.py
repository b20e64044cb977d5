import math
import re
import struct

import cbor2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.schema import BATCH_SCHEMAS, BatchConfig
from agent.errors import WireFormatError
from agent.wire.body import (
    MAX_TIME_MS,
    SCHEMA_VERSION,
    SCHEMA_VERSIONS,
    UINT64_MAX,
    BatchBody,
    Series,
    SeriesKind,
    SignalDef,
    decode_body,
    decode_varint_columns,
    decode_varints,
    dictionary_id,
    encode_body,
    encode_grouped_varints,
    encode_varints,
    varint_column,
)

ints = st.integers(min_value=-(2**64), max_value=2**64)


@given(st.lists(ints, max_size=200))
def test_varints_round_trip(values):
    assert decode_varints(encode_varints(values)) == values


def test_steady_clock_and_constant_values_cost_one_byte_each():
    times = list(range(1000, 61000, 1000))
    assert decode_varints(encode_varints(times)) == times
    deltas = encode_varints(times)
    assert len(deltas) == 2 + (len(times) - 1) * 2  # 1000 ms deltas: zigzag 2000, two bytes
    assert encode_varints([7] * 60) == bytes([14]) + bytes(59)


def test_truncated_varint_is_rejected():
    with pytest.raises(WireFormatError, match="middle of a number"):
        decode_varints(bytes([0x80]))


@st.composite
def bodies(draw):
    t0 = draw(st.integers(min_value=0, max_value=2**42))
    series = []
    for signal in range(draw(st.integers(min_value=0, max_value=6))):
        kind = draw(st.sampled_from(list(SeriesKind)))
        n = draw(st.integers(min_value=0, max_value=20))
        times = tuple(sorted(draw(st.lists(st.integers(t0 - 5000, t0 + 60000), min_size=n,
                                           max_size=n))))
        value = (st.floats(allow_nan=False) if kind.is_float else ints)
        if kind.is_stats:
            columns = tuple(tuple(draw(st.lists(value, min_size=n, max_size=n)))
                            for _ in range(3))
            columns += (tuple(draw(st.lists(st.integers(1, 10**6), min_size=n, max_size=n))),)
        else:
            columns = (tuple(draw(st.lists(value, min_size=n, max_size=n))),)
        series.append(Series(signal, kind, times, columns))
    dictionary = tuple(SignalDef(key=f"can0.M.S{i}", unit="V", scale=0.001, offset=0,
                                 is_float=False, mode="last", choices={0: "Off"} if i else None)
                       for i in range(len(series)))
    return BatchBody(vehicle=draw(st.text(max_size=20)), boot=draw(st.binary(min_size=16,
                     max_size=16)), seq=draw(st.integers(0, 2**40)), t0_ms=t0, t1_ms=t0 + 60000,
                     clock="ntp", config_version=3, dbc_digest=bytes(32),
                     health={"can0.frames": draw(st.integers(0, 2**40))},
                     dictionary_id=dictionary_id(dictionary),
                     dictionary=draw(st.sampled_from([None, dictionary])),
                     series=tuple(series), schema=draw(st.sampled_from(SCHEMA_VERSIONS)))


@given(bodies())
def test_body_round_trip(body):
    assert decode_body(encode_body(body)) == body


def test_float_columns_keep_nan_and_infinities_bit_exact():
    values = (math.nan, math.inf, -math.inf, -0.0, 1e-310)
    body = BatchBody(vehicle="v", boot=bytes(16), seq=0, t0_ms=0, t1_ms=1000, clock="gps",
                     config_version=1, dbc_digest=bytes(32), health={}, dictionary_id=bytes(8),
                     dictionary=None,
                     series=(Series(0, SeriesKind.FLOAT_LAST, (0, 1, 2, 3, 4), (values,)),))
    decoded = decode_body(encode_body(body)).series[0].columns[0]
    assert [struct.pack("<d", v) for v in decoded] == [struct.pack("<d", v) for v in values]


def test_identical_time_columns_are_stored_once():
    times = tuple(range(0, 60000, 1000))
    series = tuple(Series(i, SeriesKind.INT_LAST, times, (tuple(range(60)),)) for i in range(5))
    body = BatchBody(vehicle="v", boot=bytes(16), seq=0, t0_ms=0, t1_ms=60000, clock="ntp",
                     config_version=1, dbc_digest=bytes(32), health={}, dictionary_id=bytes(8),
                     dictionary=None, series=series)
    assert len(cbor2.loads(encode_body(body))["tb"]) == 1


@pytest.mark.parametrize("data, message", [
    (b"\xff\x00", "not valid CBOR"),
    (cbor2.dumps([1, 2]), "not a CBOR map"),
    (cbor2.dumps({"v": 99}), "unsupported batch schema version 99"),
    (cbor2.dumps({"v": 1, "t0": 0}), "does not follow schema"),
])
def test_malformed_bodies_are_rejected_with_a_reason(data, message):
    with pytest.raises(WireFormatError, match=message):
        decode_body(data)


def small_body(schema: int, *series: Series) -> dict:
    return cbor2.loads(encode_body(BatchBody(
        vehicle="v", boot=bytes(16), seq=0, t0_ms=0, t1_ms=1, clock="ntp", config_version=1,
        dbc_digest=bytes(32), health={}, dictionary_id=bytes(8), dictionary=None, series=series,
        schema=schema)))


SPEED = Series(0, SeriesKind.INT_LAST, (0, 1), ((5, 6),))
TORQUE = Series(3, SeriesKind.FLOAT_STATS, (0,), ((-1.5,), (2.5,), (4.0,), (5,)))


def test_the_default_schema_is_the_newest_and_config_accepts_every_one():
    assert max(SCHEMA_VERSIONS) == SCHEMA_VERSION == BatchConfig().schema
    assert BATCH_SCHEMAS == SCHEMA_VERSIONS


def test_schema_2_carries_series_as_five_flat_columns():
    document = small_body(2, SPEED, TORQUE)
    assert document["v"] == 2
    signals, bases, kinds, lengths, data = document["sig"]
    assert [decode_varints(c) for c in (signals, bases, kinds)] == [[0, 3], [0, 1], [0, 3]]
    assert decode_varints(lengths) == [2, 8, 8, 8, 1] and len(data) == 27
    assert data[:2] == encode_varints([5, 6]) and data[2:10] == struct.pack("<d", -1.5)
    assert small_body(1, SPEED, TORQUE)["sig"][1][:3] == [3, 1, 3]
    assert small_body(2)["sig"] == [b""] * 5


def test_series_with_columns_shorter_than_times_is_rejected():
    document = small_body(1, SPEED)
    document["sig"][0][3] = encode_varints([5])
    with pytest.raises(WireFormatError, match="inconsistent columns"):
        decode_body(cbor2.dumps(document))
    document = small_body(2, SPEED)
    document["sig"][3:] = [encode_varints([1]), encode_varints([5])]
    with pytest.raises(WireFormatError, match="inconsistent columns"):
        decode_body(cbor2.dumps(document))


def test_hostile_fields_are_rejected_as_wire_format_errors():
    document = small_body(2, SPEED)
    for key, value, message in [
            ("boot", 10**9, "boot must be a byte string"),  # bytes(10**9) would allocate 1 GB
            ("boot", bytes(15), "boot must be 16 bytes"),
            ("did", b"", "did must be 8 bytes"),
            ("t0", 1.5, "t0 must be an integer"),
            ("seq", float("inf"), "seq must be an integer"),
            ("hlth", [1, 2], "AttributeError"),
            ("v", 2.0, "unsupported batch schema version 2.0"),
            ("v", True, "unsupported batch schema version True"),
            ("tb", [[1, 2]], "tb entry must be a byte string"),
            ("prv", {"consent": "full", "ver": "7"}, "prv ver must be an integer")]:
        with pytest.raises(WireFormatError, match=message):
            decode_body(cbor2.dumps({**document, key: value}))


def test_an_overlong_varint_is_rejected_at_once():
    with pytest.raises(WireFormatError, match="longer than 10 bytes"):
        decode_varints(b"\xff" * 1_000_000 + b"\x00")
    assert decode_varints(encode_varints([-(2**64), 2**64])) == [-(2**64), 2**64]


def test_series_beyond_the_batch_dictionary_are_rejected():
    dictionary = (SignalDef("can0.M.S", "", 1, 0, False, "last"),)
    body = BatchBody(vehicle="v", boot=bytes(16), seq=0, t0_ms=0, t1_ms=1, clock="ntp",
                     config_version=1, dbc_digest=bytes(32), health={},
                     dictionary_id=dictionary_id(dictionary), dictionary=dictionary,
                     series=(SPEED, TORQUE))
    with pytest.raises(WireFormatError, match="beyond the 1 entries"):
        decode_body(encode_body(body))


@pytest.mark.parametrize("change, message", [
    (lambda sig: sig[:4], "array of 5 byte strings"),
    (lambda sig: [*sig[:4], [sig[4]]], "array of 5 byte strings"),
    (lambda sig: [encode_varints([0]), *sig[1:]], "2 time bases"),
    (lambda sig: [*sig[:4], sig[4] + b"\0"], "add up to 27 bytes, not the 28"),
    (lambda sig: [*sig[:3], encode_varints([2, 8, 8, 8, -1]), sig[4]], "negative column length"),
    (lambda sig: [*sig[:3], encode_varints([2, 8, 8, 9]), sig[4]], "fewer column lengths"),
    (lambda sig: [*sig[:3], encode_varints([2, 8, 8, 8, 1, 0]), sig[4]], "1 column lengths left"),
    (lambda sig: [sig[0], encode_varints([0, 2]), *sig[2:]], "names time base 2 of 2"),
    (lambda sig: [sig[0], encode_varints([-1, 1]), *sig[2:]], "names time base -1"),
    (lambda sig: [encode_varints([-1, 3]), *sig[1:]], "signal index -1 is not in 0..65534"),
    (lambda sig: [encode_varints([0, 65535]), *sig[1:]], "signal index 65535 is not"),
    (lambda sig: [encode_varints([0, 0]), *sig[1:]], "more than one series"),
    (lambda sig: [*sig[:4], sig[4][:0]], "add up to 27 bytes, not the 0"),
    (lambda sig: [sig[0], sig[1], encode_varints([0, 7]), *sig[3:]], "series kind 7, not one of"),
])
def test_malformed_schema_2_series_are_rejected_with_a_reason(change, message):
    document = small_body(2, SPEED, TORQUE)
    assert len(document["tb"]) == 2
    document["sig"] = change(document["sig"])
    with pytest.raises(WireFormatError, match=message):
        decode_body(cbor2.dumps(document))


@given(st.lists(st.lists(st.integers(min_value=-(2**62), max_value=2**62), min_size=1,
                         max_size=30), min_size=1, max_size=12))
def test_grouped_varints_equal_the_reference_encoder(groups):
    values = np.array([v for group in groups for v in group], dtype=np.int64)
    lengths = [len(group) for group in groups]
    starts = np.cumsum([0, *lengths[:-1]])
    assert encode_grouped_varints(values, starts) == [encode_varints(g) for g in groups]


@pytest.mark.parametrize("count", [1, 1023, 1024, 5000])
def test_a_varint_column_is_the_reference_encoding_on_either_side_of_the_numpy_threshold(count):
    rng = np.random.default_rng(count)
    values = rng.integers(-(2**40), 2**40, size=count).tolist()
    values[count // 2:] = [value % 300 for value in values[count // 2:]]  # 1- and 2-byte deltas
    assert varint_column(values) == encode_varints(values)


def test_grouped_varints_fall_back_for_very_wide_ranges():
    groups = [[-(2**63), 2**63 - 1], [5, 6]]
    values = np.array([v for group in groups for v in group], dtype=np.int64)
    assert encode_grouped_varints(values, np.array([0, 2])) == [encode_varints(g)
                                                                 for g in groups]


def test_grouped_varints_fall_back_only_for_the_wide_group_and_skip_floats():
    groups = [[1, 2, 3], [-(2**63), 2**63 - 1], [2**62, 2**62 + 5], [7, 7]]
    values = np.array([v for group in groups for v in group], dtype=np.int64)
    starts = np.array([0, 3, 5, 7])
    assert encode_grouped_varints(values, starts) == [encode_varints(g) for g in groups]
    skip = np.array([False, True, False, True])
    assert encode_grouped_varints(values, starts, skip=skip) == [
        encode_varints(groups[0]), b"", encode_varints(groups[2]), b""]


@given(st.lists(st.tuples(st.lists(st.one_of(st.integers(-64, 63),
                                           st.integers(-(2**62), 2**62)),
                                 min_size=1, max_size=8), st.booleans()),
                min_size=1, max_size=150))
def test_grouped_varints_skip_few_or_many_groups_and_keep_the_rest_exact(groups):
    # Up to 64 skipped groups are cleared by slice, more through a mask: both paths.
    values = np.array([v for group, _ in groups for v in group], dtype=np.int64)
    starts = np.cumsum([0, *[len(group) for group, _ in groups[:-1]]])
    skip = np.array([skipped for _, skipped in groups])
    assert encode_grouped_varints(values, starts, skip=skip) == [
        b"" if skipped else encode_varints(group) for group, skipped in groups]


@pytest.mark.parametrize("skipped_every", [1, 2, 50])
def test_grouped_varints_skip_by_slice_or_by_mask_alike(skipped_every):
    rng = np.random.default_rng(skipped_every)
    groups = [rng.integers(-(2**40), 2**40, size=3).tolist() for _ in range(200)]
    values = np.array([v for group in groups for v in group], dtype=np.int64)
    skip = np.arange(200) % skipped_every == 0  # 200, 100 or 4 groups skipped
    assert encode_grouped_varints(values, np.arange(200) * 3, skip=skip) == [
        b"" if skipped else encode_varints(group)
        for group, skipped in zip(groups, skip.tolist(), strict=True)]


def test_grouped_varints_of_zeros_and_single_byte_values():
    starts = np.array([0, 2])
    assert encode_grouped_varints(np.zeros(4, dtype=np.int64), starts) == [b"\0\0", b"\0\0"]
    assert encode_grouped_varints(np.array([63, 0, -64, -64]), starts) == [
        encode_varints([63, 0]), encode_varints([-64, -64])]


def test_unsigned_64_bit_signals_come_back_whole():
    """A raw value at or above 2**63 travels as its int64 bit pattern; type "u" in the
    dictionary tells the decoder to add 2**64 back (a serial number in a VW MQB IMU frame)."""
    wide = SignalDef("can0.IMU.Serial", "", 1, 0, False, "last", is_unsigned64=True)
    narrow = SignalDef("can0.IMU.Counter", "", 1, 0, False, "last")
    raw = 17190515994897749176
    body = BatchBody(vehicle="v", boot=bytes(16), seq=0, t0_ms=0, t1_ms=1000, clock="ntp",
                     config_version=1, dbc_digest=bytes(32), health={},
                     dictionary_id=dictionary_id((wide, narrow)), dictionary=(wide, narrow),
                     series=(Series(0, SeriesKind.INT_LAST, (0,), ((raw - 2**64,),)),))
    decoded = decode_body(encode_body(body))
    assert decoded.dictionary == (wide, narrow)
    assert cbor2.loads(encode_body(body))["dict"][0][4] == "u"
    (value,) = decoded.series[0].columns[0]
    assert decoded.dictionary[0].physical(value) == raw
    assert narrow.physical(-5) == -5


# Found by fuzzing (#20): integers past Python's 4300-digit int-to-str limit, times no date can
# name, and scales that are not numbers got through decoding and raised later, in the
# rejection message itself or in what the backend printed and wrote (ValueError, TypeError,
# OverflowError, OSError). Decoding now refuses them (docs/wire-format.md §4.8).
huge = st.integers(min_value=10**4300, max_value=10**5000)
beyond_64_bits = st.one_of(huge, huge.map(lambda n: -n), st.integers(min_value=2**64),
                           st.integers(max_value=-(2**64) - 1))


@given(key=st.sampled_from(["t0", "t1", "seq", "cfg"]),
       value=st.one_of(beyond_64_bits, st.integers(max_value=-1),
                       st.integers(min_value=MAX_TIME_MS + 1, max_value=2**63)))
def test_times_and_counters_out_of_range_are_rejected(key, value):
    if key in ("seq", "cfg") and 0 <= value <= UINT64_MAX:
        value += 2**64  # in range for a counter: push it out
    with pytest.raises(WireFormatError, match=rf"{key} must be .*from 0 to") as caught:
        decode_body(cbor2.dumps({**small_body(2, SPEED), key: value}))
    assert len(str(caught.value)) < 300


@given(value=beyond_64_bits, where=st.sampled_from(["v", "hlth", "prv", "v in a list"]))
def test_integers_beyond_64_bits_anywhere_are_rejected_with_a_message(value, where):
    document = small_body(2, SPEED)
    document.update({"v": {"v": value, "v in a list": [2, value]}.get(where, 2),
                     "hlth": {"can0.frames": value} if where == "hlth" else {},
                     "prv": {"consent": "full", "ver": value} if where == "prv" else None})
    with pytest.raises(WireFormatError) as caught:
        decode_body(cbor2.dumps(document))
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("scale, offset, message", [
    (None, 0, "scale of 'can0.M.S' must be a number, got NoneType"),
    ({"a": 1}, 0, "scale of 'can0.M.S' must be a number, got dict"),
    (1, [0], "offset of 'can0.M.S' must be a number, got list"),
    (True, 0, "scale of 'can0.M.S' must be a number, got bool"),
    (10**400, 0, "scale of 'can0.M.S' must be from"),
    (1, float("nan"), "offset of 'can0.M.S' must be finite, got nan"),
    (float("-inf"), 0, "scale of 'can0.M.S' must be finite, got -inf"),
], ids=["null", "map", "array", "bool", "bignum", "nan", "-inf"])
def test_a_dictionary_scale_or_offset_must_be_a_finite_number(scale, offset, message):
    document = small_body(2, SPEED)
    document["dict"] = [["can0.M.S", "", scale, offset, "i", "last", None]]
    with pytest.raises(WireFormatError, match=re.escape(message)):
        decode_body(cbor2.dumps(document))


def test_the_bounds_themselves_are_accepted():
    document = small_body(2, SPEED)
    document.update(t0=MAX_TIME_MS, t1=MAX_TIME_MS, seq=UINT64_MAX, cfg=UINT64_MAX,
                    hlth={"gauge": -(2**64), "counter": UINT64_MAX},
                    prv={"consent": "off", "ver": UINT64_MAX},
                    dict=[["can0.M.S", "", -(2**64), UINT64_MAX, "i", "last", None]])
    body = decode_body(cbor2.dumps(document))
    assert (body.t0_ms, body.seq, body.config_version) == (MAX_TIME_MS, UINT64_MAX, UINT64_MAX)
    assert body.dictionary[0].physical(1) == -(2**64) + UINT64_MAX
    assert decode_body(cbor2.dumps({**document, "t0": 0, "t1": 0})).t0_ms == 0


@given(st.lists(st.lists(st.integers(min_value=-(2**63), max_value=2**63)
                         | st.integers(min_value=-300, max_value=300), max_size=40),
                max_size=12))
def test_columns_decoded_together_equal_columns_decoded_one_by_one(columns):
    encoded = [encode_varints(column) for column in columns]
    together = decode_varint_columns(encoded)
    one_by_one = [tuple(decode_varints(data)) for data in encoded]
    assert together is None or together == one_by_one
    small = [[value % 1000 - 500 for value in column] for column in columns]
    assert decode_varint_columns([encode_varints(c) for c in small]) == [tuple(c) for c in small]


def test_a_column_cut_inside_a_varint_is_left_to_the_exact_path():
    assert decode_varint_columns([b"\x80", b"\x00"]) is None
    assert decode_varint_columns([b"", b""]) == [(), ()]
