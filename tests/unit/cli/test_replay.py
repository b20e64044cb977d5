"""`edge-agent replay` (tools/replay) onto python-can virtual buses: routing, frame kinds, count."""

from __future__ import annotations

import json

import can
import pytest

from agent.cli import main
from agent.cli.replay import parse_mapping
from agent.errors import AgentError

LOG = """\
(1700000000.000000) can0 123#11223344
(1700000000.001000) can1 1ABCDEF0#0102030405060708
(1700000000.002000) can0 200##1000102030405060708090A0B0C0D0E0F
(1700000000.003000) can0 321#R
(1700000000.004000) can1 7FF#
(1700000000.005000) can0 123#55667788
"""


@pytest.fixture
def log_file(tmp_path):
    path = tmp_path / "mixed.log"
    path.write_text(LOG, encoding="utf-8")
    return path


def receive_all(bus: can.BusABC) -> list[can.Message]:
    frames = []
    while (frame := bus.recv(0.2)) is not None:
        frames.append(frame)
    return frames


def test_frames_keep_ids_data_and_kinds_in_order(log_file, capsys):
    with can.Bus(interface="virtual", channel="replay-all") as receiver:
        assert main(["replay", "--interface", "virtual", "--channel", "replay-all",
                     "--speed", "0", "--json", str(log_file)]) == 0
        got = receive_all(receiver)
    expected = list(can.LogReader(str(log_file)))
    assert [(f.arbitration_id, f.is_extended_id, f.is_fd, f.is_remote_frame, bytes(f.data))
            for f in got] == [
        (f.arbitration_id, f.is_extended_id, f.is_fd, f.is_remote_frame, bytes(f.data))
        for f in expected]
    assert got[2].is_fd and len(got[2].data) == 16 and got[2].bitrate_switch
    assert got[3].is_remote_frame
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == 6 and summary["sent"] == {"replay-all": 6}
    assert summary["error"] is None


def test_mapping_routes_log_channels_and_skips_unmapped_ones(log_file, capsys):
    with can.Bus(interface="virtual", channel="replay-a") as a, \
            can.Bus(interface="virtual", channel="replay-b") as b:
        assert main(["replay", "-i", "virtual", "--speed", "0", "--json", str(log_file),
                     "replay-a=can0"]) == 0
        assert [f.arbitration_id for f in receive_all(a)] == [0x123, 0x200, 0x321, 0x123]
        assert receive_all(b) == []
        summary = json.loads(capsys.readouterr().out)
        assert summary["skipped"] == {"can1": 2}

        assert main(["replay", "-i", "virtual", "--speed", "0", "--json", str(log_file),
                     "replay-a=can1", "replay-b=can0"]) == 0
        assert [f.arbitration_id for f in receive_all(a)] == [0x1ABCDEF0, 0x7FF]
        assert [f.arbitration_id for f in receive_all(b)] == [0x123, 0x200, 0x321, 0x123]


def test_loop_with_count_stops_after_that_many_frames(log_file, capsys):
    with can.Bus(interface="virtual", channel="replay-loop") as receiver:
        assert main(["replay", "-i", "virtual", "-c", "replay-loop", "--speed", "0",
                     "--loop", "--count", "15", "--json", str(log_file)]) == 0
        got = receive_all(receiver)
    assert len(got) == 15
    assert [f.arbitration_id for f in got[6:12]] == [f.arbitration_id for f in got[:6]]
    assert json.loads(capsys.readouterr().out)["frames"] == 15


def test_bad_mapping_and_missing_log_are_errors_not_tracebacks(tmp_path, log_file, capsys):
    with pytest.raises(AgentError, match="DEST=SOURCE"):
        parse_mapping(["vcan0"])
    assert main(["replay", "-i", "virtual", str(log_file), "=can0"]) == 2
    assert main(["replay", "-i", "virtual", str(tmp_path / "missing.log")]) == 2
    assert "log file not found" in capsys.readouterr().err


def test_an_unopenable_interface_is_reported(log_file, capsys):
    assert main(["replay", "-i", "socketcan", "-c", "no-such-can9", str(log_file)]) == 2
    assert "cannot open socketcan channel 'no-such-can9'" in capsys.readouterr().err


def test_vector_log_channels_are_mapped_by_the_numbers_the_file_shows(tmp_path, capsys):
    path = tmp_path / "two-buses.asc"
    with can.ASCWriter(str(path)) as writer:  # python-can's channel 0 is the file's channel 1
        for channel, arbitration_id in ((0, 0x100), (1, 0x200), (1, 0x201)):
            writer.on_message_received(can.Message(
                timestamp=1700000000.0 + arbitration_id / 1000, arbitration_id=arbitration_id,
                is_extended_id=False, data=b"\x01", channel=channel))
    with can.Bus(interface="virtual", channel="replay-vector") as receiver:
        assert main(["replay", "-i", "virtual", "--speed", "0", "--json", str(path),
                     "replay-vector=2"]) == 0
        assert [f.arbitration_id for f in receive_all(receiver)] == [0x200, 0x201]
    assert json.loads(capsys.readouterr().out)["skipped"] == {"1": 1}


def test_a_mapping_that_matches_no_channel_of_the_log_says_so_and_fails(log_file, capsys):
    with can.Bus(interface="virtual", channel="replay-none") as receiver:
        assert main(["replay", "-i", "virtual", "--speed", "0", str(log_file),
                     "replay-none=vcan7"]) == 1
        assert receive_all(receiver) == []
    error = capsys.readouterr().err
    assert "no frame of the log is on vcan7" in error and "can0, can1" in error
    assert main(["replay", "-i", "virtual", "--speed", "0", "--json", str(log_file),
                 "replay-none=vcan7"]) == 1
    assert "vcan7" in json.loads(capsys.readouterr().out)["error"]
