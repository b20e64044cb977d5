"""The serial sensor protocols: exact decoding, and fuzzing with hypothesis."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.errors import ConfigError
from agent.sources.sensor_protocols import (
    PROTOCOLS,
    WHEELS,
    Measurement,
    NmeaSentences,
    Rejected,
    TpmsBinaryFrames,
    crc16_ccitt,
    encode_tpms_frame,
    nmea_sentence,
    protocol_class,
)


def measurements(decoded):
    return [(d.quantity, d.value) for d in decoded if isinstance(d, Measurement)]


def reasons(decoded):
    return [d.reason for d in decoded if isinstance(d, Rejected)]


def test_crc16_ccitt_false_check_value():
    assert crc16_ccitt(b"123456789") == 0x29B1  # the catalogued check value of this CRC


def test_nmea_sentence_checksum_is_the_xor_between_dollar_and_star():
    # A published NMEA 0183 example: the checksum is right, the sentence is not ours.
    assert reasons(NmeaSentences().feed(b"$GPGLL,5057.970,N,00146.110,E,142451,A*27\r\n")) == [
        "unknown_sentence"]
    assert nmea_sentence("SUSP,FL,100.0") == b"$SUSP,FL,100.0*20\r\n"
    assert measurements(NmeaSentences().feed(b"$SUSP,FL,100.0*20\n")) == [("FL.height", 100.0)]


def test_binary_frame_layout():
    frame = encode_tpms_frame("RL", 240.1, -3, 2.9)
    assert frame.hex() == "55aa" "02" "0961" "2f" "91" "00" + f"{crc16_ccitt(frame[2:8]):04x}"
    assert measurements(TpmsBinaryFrames().feed(frame)) == [
        ("RL.pressure", 240.1), ("RL.temperature", -3), ("RL.battery", pytest.approx(2.9))]


@pytest.mark.parametrize("line, reason", [
    (b"$TPMS,FL,230,25,3.0*00", "bad_checksum"),
    (b"$TPMS,FL,230,25,3.0", "malformed"),
    (b"TPMS,FL,230,25,3.0*00", "garbage"),
    (nmea_sentence("TPMS,FL,230,25")[:-2], "malformed"),
    (nmea_sentence("TPMS,FL,inf,25,3.0")[:-2], "malformed"),
    (nmea_sentence("TPMS,FL,1e3,25,3.0")[:-2], "malformed"),
    (nmea_sentence("TPMS,FL,1_0,25,3.0")[:-2], "malformed"),
    (nmea_sentence(f"SUSP,FL,{'9' * 60}")[:-2], "malformed"),  # more digits than a float
    (nmea_sentence(f"SUSP,FL,{'9' * 400}")[:-2], "too_long"),
    (nmea_sentence("TPMS,FL,230,25,5.5")[:-2], "out_of_range"),
    (nmea_sentence("TPMS,FL,230,-41,3.0")[:-2], "out_of_range"),
    (nmea_sentence("SUSP,FL,-1")[:-2], "out_of_range"),
    (nmea_sentence("SUSP,SPARE,100")[:-2], "unknown_wheel"),
    (nmea_sentence("GPGGA,1,2")[:-2], "unknown_sentence"),
])
def test_nmea_rejections_name_their_reason(line, reason):
    assert reasons(NmeaSentences().feed(line + b"\r\n")) == [reason]


def test_nmea_over_long_line_is_dropped_once_and_the_next_line_is_read():
    protocol = NmeaSentences()
    decoded = protocol.feed(b"$" + b"9" * 500)
    decoded += protocol.feed(b"9" * 500 + b"\n" + nmea_sentence("SUSP,RR,50"))
    assert reasons(decoded) == ["too_long"]
    assert measurements(decoded) == [("RR.height", 50.0)]


def test_reset_forgets_a_partial_line():
    protocol = NmeaSentences()
    protocol.feed(b"$SUSP,FL,1")
    protocol.reset()
    assert measurements(protocol.feed(nmea_sentence("SUSP,FL,2"))) == [("FL.height", 2.0)]


def test_unknown_protocol_names_the_known_ones():
    with pytest.raises(ConfigError, match="nmea, tpms-binary"):
        protocol_class("modbus")


def test_catalogues_cover_every_quantity_the_protocols_deliver():
    for protocol in PROTOCOLS.values():
        assert len({s.quantity for s in protocol.catalogue}) == len(protocol.catalogue)
    assert {s.quantity for s in NmeaSentences.catalogue} == {
        f"{wheel}.{quantity}" for wheel in WHEELS
        for quantity in ("pressure", "temperature", "battery", "height")}


def _check_decoded(decoded, catalogue):
    names = {s.quantity for s in catalogue}
    for item in decoded:
        assert isinstance(item, Measurement | Rejected)
        if isinstance(item, Measurement):
            assert item.quantity in names
            assert math.isfinite(item.value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.sampled_from(sorted(PROTOCOLS)))
def test_random_bytes_never_crash_and_buffers_stay_bounded(chunks, name):
    protocol = PROTOCOLS[name]()
    for chunk in chunks:
        _check_decoded(protocol.feed(chunk), protocol.catalogue)
        assert len(protocol._buffer) <= max(NmeaSentences.MAX_LINE, TpmsBinaryFrames.LENGTH)


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10**9, 10**9).map(str), st.text(max_size=12),
                    st.from_regex(r"-?[0-9]{1,80}(\.[0-9]{0,80})?", fullmatch=True))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["TPMS", "SUSP", "TPMSX", ""]), st.sampled_from([*WHEELS, "X", ""]),
       st.lists(numbers, max_size=5))
def test_checksummed_sentences_with_any_fields_are_measured_or_rejected(kind, wheel, fields):
    body = ",".join([kind, wheel, *fields])
    if not body.isascii() or any(c in body for c in "\r\n*$"):
        return
    decoded = NmeaSentences().feed(nmea_sentence(body))
    _check_decoded(decoded, NmeaSentences.catalogue)
    assert len(decoded) in (1, 3) or (kind == "TPMS" and not decoded)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 255), st.binary(max_size=12), st.integers(0, 9))
def test_any_binary_frame_is_measured_or_rejected_and_truncation_loses_only_itself(
        wheel, pressure, temperature, battery, flags, noise, cut):
    payload = bytes([wheel]) + pressure.to_bytes(2, "big") + bytes([temperature, battery, flags])
    frame = b"\x55\xaa" + payload + crc16_ccitt(payload).to_bytes(2, "big")
    follower = encode_tpms_frame("FR", 200.0, 20, 3.0)
    # A frame missing only its last byte, when that byte was 0x55, is completed by the
    # follower's first sync byte into a valid frame: no fixed-frame protocol can tell.
    assume(not (cut == 9 and frame[9] == 0x55))
    decoded = TpmsBinaryFrames().feed(noise + frame[:cut] + follower)
    _check_decoded(decoded, TpmsBinaryFrames.catalogue)
    assert measurements(decoded)[-3:] == [("FR.pressure", 200.0), ("FR.temperature", 20),
                                          ("FR.battery", pytest.approx(3.0))]
