"""The raw SocketCAN reader against python-can's on the same vcan0 at the same time: the same
frames with the same kernel timestamps, and the daemon decodes the same values through both."""

from __future__ import annotations

import subprocess

import can
import cantools

from agent.sources.canbus import CanBusSource, set_receive_buffer
from agent.sources.health import SourceHealth
from agent.sources.socketcan_raw import RawSocketCanSource, drain, open_socket
from tests.helpers.support import require_tool
from tests.vcan.conftest import running_agent, sender, wait_for, write_config
from tests.vcan.kinds_dbc import write_kinds_dbc

FIELDS = ("timestamp", "arbitration_id", "is_extended_id", "is_remote_frame", "is_error_frame",
          "is_fd", "bitrate_switch", "error_state_indicator", "dlc")
FILTERS = [{"can_id": 0x100, "can_mask": 0x7FF, "extended": False},
           {"can_id": 0x18FEDA10, "can_mask": 0x1FFFFFFF, "extended": True},
           {"can_id": 0x200, "can_mask": 0x7FF, "extended": False}]
# Every kind canplayer can send: classic, extended, FD with and without bit-rate switch,
# remote, empty, a short FD frame, and IDs no filter lets through (either kind).
KINDS = ["100#{n:016X}", "18FEDA10#{n:08X}", "200##1" + "AB" * 62 + "{n:04X}",
         "200##0{n:04X}", "100#R", "100#", "123#{n:04X}", "00000100#{n:02X}"]
PASSING = 6
REPEATS = 150


def play(tmp_path, lines: list[str]) -> None:
    log = tmp_path / "kinds.log"
    log.write_text("".join(f"({1_700_000_000 + n / 2000:.6f}) can0 {line}\n"
                           for n, line in enumerate(lines)), encoding="ascii")
    subprocess.run([require_tool("canplayer"), "-I", str(log), "vcan0=can0"], check=True,
                   timeout=120)


def as_tuple(frame: object) -> tuple:
    return (*(getattr(frame, name) for name in FIELDS), bytes(frame.data))  # type: ignore[attr-defined]


def test_raw_reader_reads_the_frames_and_timestamps_python_can_reads(tmp_path):
    raw = open_socket("vcan0", FILTERS, fd=True, receive_buffer=8 * 2**20)
    reference = can.Bus(interface="socketcan", channel="vcan0", fd=True, can_filters=FILTERS)
    # It is read after the raw reader: its queue holds every frame meanwhile (the default
    # ~200 frames overflowed in the VM).
    set_receive_buffer(reference.socket, 8 * 2**20)
    try:
        play(tmp_path, [kind.format(n=n) for n in range(REPEATS) for kind in KINDS])
        with sender("vcan0") as bus:
            bus.send(can.Message(arbitration_id=0x004, is_error_frame=True, data=bytes(8),
                                 is_extended_id=False))
        expected = PASSING * REPEATS + 1
        health = SourceHealth()
        got: list = []
        wait_for(lambda: got.extend(drain(raw, health)) or len(got) >= expected,
                 "the raw reader's frames", state=lambda: len(got))
        wanted = []
        while len(wanted) < expected and (message := reference.recv(5.0)) is not None:
            wanted.append(message)
    finally:
        raw.shutdown()
        reference.shutdown()
    assert len(got) == len(wanted) == expected
    assert [as_tuple(f) for f in got] == [as_tuple(m) for m in wanted]
    assert got[-1].is_error_frame and got[2].is_fd and got[2].bitrate_switch
    assert health.rejected == {} and raw.drops == 0


SOURCES = """
[[sources]]
name = "raw"
type = "socketcan"
channel = "vcan0"
fd = true
dbc = ["{dbc}"]

[[sources]]
name = "pycan"
type = "socketcan"
reader = "python-can"
channel = "vcan0"
fd = true
dbc = ["{dbc}"]
"""
SAMPLING = """
[[sampling.signals]]
match = "*"

[[sampling.signals]]
match = "*.Unplanned.*"
exclude = true
"""


def test_daemon_decodes_the_same_values_through_either_reader(tmp_path):
    dbc = write_kinds_dbc(tmp_path)
    database = cantools.database.load_file(dbc)
    engine, diag, wide = (database.get_message_by_name(n) for n in ("Engine", "Diag", "Wide"))
    config = write_config(tmp_path, SOURCES.format(dbc=dbc), SAMPLING)
    lines = []
    for n in range(200):
        lines.append("100#" + engine.encode({"Speed": n * 1.25, "Gear": n % 8}).hex())
        lines.append(f"{diag.frame_id:08X}#" + diag.encode({"Dtc": n * 7919}).hex())
        lines.append("200##1" + wide.encode({"First": n, "Last": 65000 - n}).hex())
        lines.append("100#R")
        lines.append(f"300#{n:02X}")
    lines.append("100#" + engine.encode({"Speed": 99.5, "Gear": 9}).hex())
    with running_agent(config) as agent:
        assert isinstance(agent.sources[0], RawSocketCanSource)
        assert type(agent.sources[1]) is CanBusSource
        play(tmp_path, lines)
        with sender("vcan0") as bus:
            bus.send(can.Message(arbitration_id=0x004, is_error_frame=True, data=bytes(8),
                                 is_extended_id=False))

        def values(name: str) -> dict:
            return {planned.key.split(".", 1)[1]: (value, at) for planned, value, at
                    in agent.stores[name].current_values()}

        def done() -> bool:
            return all(agent.stores[name].health.error_frames == 1
                       and values(name).get("Engine.Gear", (0,))[0] == 9
                       for name in ("raw", "pycan"))

        wait_for(done, "the last frames through both readers",
                 state=lambda: {n: agent.stores[n].health for n in ("raw", "pycan")})
        raw, pycan = agent.stores["raw"].health, agent.stores["pycan"].health
        assert values("raw") == values("pycan")
        assert values("raw")["Diag.Dtc"][0] == 199 * 7919
        assert (raw.frames, raw.ignored, raw.error_frames, raw.overflow) == \
            (pycan.frames, pycan.ignored, pycan.error_frames, pycan.overflow)
        assert raw.frames == 200 * 4 + 2  # the unplanned 0x300 never reaches Python
        assert raw.last_frame_time == pycan.last_frame_time
