"""The serial sensor source on real pseudo-terminals, fed by a sensor emulator process."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sources.health import SourceHealth
from agent.sources.sensor_protocols import PROTOCOLS, encode_tpms_frame, nmea_sentence
from agent.sources.serial_sensors import SerialSensorSource
from tests.helpers.sensor_emulator import Emulator
from tests.helpers.source_harness import RunningSource
from tests.helpers.support import wait_until


@pytest.fixture
def emulator(tmp_path):
    sensor = Emulator(tmp_path / "ttyTPMS")
    yield sensor
    sensor.close()


def serial_source(link: Path, protocol: str, health: SourceHealth,
                  stale_after: float = 30.0) -> SerialSensorSource:
    return SerialSensorSource("tpms", health, str(link), 19200, PROTOCOLS[protocol],
                              stale_after)


def test_nmea_sentences_arrive_and_every_bad_line_is_counted_by_reason(emulator):
    health = SourceHealth()
    with RunningSource(serial_source(emulator.link, "nmea", health)) as running:
        assert wait_until(lambda: health.state.get("connected") == 1)
        emulator.send(b"E,0.0*3A\r\n")  # the tail of a line, as after plugging in mid-line
        emulator.send(nmea_sentence("TPMS,FL,231.5,24.5,2.95"))
        emulator.send(nmea_sentence("SUSP,RR,118.2")[:7])  # a line in two pieces
        emulator.send(nmea_sentence("SUSP,RR,118.2")[7:])
        emulator.send(nmea_sentence("TPMS,FR,230.0,25.0,3.00").replace(b"*", b"0*"))
        emulator.send(nmea_sentence("TPMS,FR,9999.0,25.0,3.00"))
        emulator.send(nmea_sentence("TPMS,XX,230.0,25.0,3.00"))
        emulator.send(nmea_sentence("TPMS,FR,nan,25.0,3.00"))
        emulator.send(b"\x00\xff\xfe garbage\n")
        emulator.send(b"$" + b"A" * 200 + b"\r\n")
        emulator.send(nmea_sentence("TPMS,RL,228.0,-5.5,2.80"))
        assert wait_until(lambda: running.values("RL.pressure") == [228.0])
        assert wait_until(lambda: health.rejected.get("garbage") == 2)
    assert running.values("FL.pressure") == [231.5]
    assert running.values("FL.temperature") == [24.5]
    assert running.values("FL.battery") == [2.95]
    assert running.values("RR.height") == [118.2]
    assert running.values("RL.temperature") == [-5.5]
    assert running.values("FR.pressure") == []
    assert health.rejected == {"garbage": 2, "bad_checksum": 1, "out_of_range": 1,
                               "unknown_wheel": 1, "malformed": 1, "too_long": 1}
    assert health.state["connected"] == 0  # closed when stopped


def test_binary_frames_survive_corruption_and_resynchronise(emulator):
    health = SourceHealth()
    good = encode_tpms_frame("FL", 240.0, 30, 2.9)
    flipped = bytearray(encode_tpms_frame("FR", 235.0, 31, 2.9))
    flipped[4] ^= 0x10
    with RunningSource(serial_source(emulator.link, "tpms-binary", health)) as running:
        assert wait_until(lambda: health.state.get("connected") == 1)
        emulator.send(b"\x13\x37" + good[:6])
        emulator.send(good[6:] + bytes(flipped) + encode_tpms_frame("RR", 210.3, -12, 3.1))
        emulator.send(encode_tpms_frame("RL", 1000.1, 20, 3.0))  # out of range
        emulator.send(encode_tpms_frame("RL", 220.0, 20, 3.0))
        assert wait_until(lambda: running.values("RL.pressure") == [220.0])
    assert running.values("FL.pressure") == [240.0]
    assert running.values("RR.pressure") == [210.3]
    assert running.values("RR.temperature") == [-12]
    assert running.values("FR.pressure") == []
    assert health.rejected["bad_crc"] >= 1
    assert health.rejected["garbage"] >= 1
    assert health.rejected["out_of_range"] == 1


def test_unplugged_device_is_reopened_when_it_comes_back(emulator):
    health = SourceHealth()
    with RunningSource(serial_source(emulator.link, "nmea", health)) as running:
        assert wait_until(lambda: health.state.get("connected") == 1)
        emulator.send(nmea_sentence("SUSP,FL,100.0"))
        assert wait_until(lambda: running.values("FL.height") == [100.0])
        assert health.state["connected"] == 1
        emulator.unplug()
        assert wait_until(lambda: health.state["connected"] == 0)
        assert wait_until(lambda: health.reconnects >= 2)  # failed reopenings, counted
        emulator.plug()
        assert wait_until(lambda: health.state["connected"] == 1)
        # pyserial flushes input on open; the sensor speaks periodically, so send after it
        emulator.send(nmea_sentence("SUSP,FL,101.0"))
        assert wait_until(lambda: running.values("FL.height") == [100.0, 101.0])


def test_device_missing_at_start_is_waited_for(tmp_path):
    health = SourceHealth()
    link = tmp_path / "ttyLATE"
    with RunningSource(serial_source(link, "nmea", health)) as running:
        assert wait_until(lambda: health.reconnects >= 1)
        late = Emulator(link)
        try:
            assert wait_until(lambda: health.state.get("connected") == 1)
            late.send(nmea_sentence("SUSP,RL,90.5"))
            assert wait_until(lambda: running.values("RL.height") == [90.5])
        finally:
            late.close()
    assert running.idle_calls > 0  # time moved on for the sampler while it waited


def test_silent_sensor_is_flagged_stale_until_it_speaks_again(emulator):
    health = SourceHealth()
    with RunningSource(serial_source(emulator.link, "nmea", health, stale_after=0.5)):
        assert wait_until(lambda: health.state.get("connected") == 1)
        emulator.send(nmea_sentence("SUSP,FL,100.0"))
        assert wait_until(lambda: health.state.get("stale") == 1)
        emulator.send(nmea_sentence("SUSP,FL,100.0"))
        assert wait_until(lambda: health.state.get("stale") == 0)
