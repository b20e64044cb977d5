"""Extended IDs, CAN FD, remote and error frames on a real vcan0, and the kernel filters."""

from __future__ import annotations

import can
import cantools

from tests.vcan.conftest import running_agent, sender, wait_for, write_config
from tests.vcan.kinds_dbc import kinds_source, write_kinds_dbc

# "Unplanned" is in the DBC but excluded by the sampling rules, 0x7AB in no DBC at all.
SAMPLING = """
[[sampling.signals]]
match = "can0.*"

[[sampling.signals]]
match = "can0.Unplanned.*"
exclude = true
"""


def agent_config(tmp_path):
    dbc = write_kinds_dbc(tmp_path)
    config = write_config(tmp_path, kinds_source(dbc, fd=True), SAMPLING)
    return config, cantools.database.load_file(dbc)


def current(agent, source="can0"):
    return {planned.key: value for planned, value, _ in agent.stores[source].current_values()}


def test_extended_fd_remote_and_error_frames_are_decoded_or_counted(tmp_path):
    config, database = agent_config(tmp_path)
    engine, diag, wide = (database.get_message_by_name(n) for n in ("Engine", "Diag", "Wide"))
    first = engine.encode({"Speed": 12.34, "Gear": 3})
    extended = diag.encode({"Dtc": 0xC0FFEE})
    fd_payload = wide.encode({"First": 4242, "Last": 65000})
    final = engine.encode({"Speed": 99.5, "Gear": 4})
    frames = [
        can.Message(arbitration_id=0x100, data=first, is_extended_id=False),
        can.Message(arbitration_id=diag.frame_id, data=extended, is_extended_id=True),
        can.Message(arbitration_id=0x200, data=fd_payload, is_fd=True, bitrate_switch=True,
                    is_extended_id=False),
        can.Message(arbitration_id=0x100, is_remote_frame=True, dlc=8, is_extended_id=False),
        can.Message(arbitration_id=0x004, is_error_frame=True, data=bytes(8),
                    is_extended_id=False),
        # Same numbers, other kind: the kernel filters tell 11-bit from 29-bit IDs.
        can.Message(arbitration_id=0x100, data=first, is_extended_id=True),
        can.Message(arbitration_id=diag.frame_id & 0x7FF, data=extended, is_extended_id=False),
        can.Message(arbitration_id=0x100, data=final, is_extended_id=False),
    ]
    with running_agent(config) as agent, sender("vcan0") as bus:
        health = agent.stores["can0"].health
        for frame in frames:
            bus.send(frame)
        wait_for(lambda: current(agent).get("can0.Engine.Gear") == 4, "the last frame")
        values = current(agent)
        assert health.frames == 6, (health, values)  # the other ID kinds never reach Python
        assert health.error_frames == 1
        assert health.ignored == 1  # the remote frame: its ID is planned, it has no data
        assert agent.stores["can0"].ignored_ids == {0x100: 1}
        assert health.short_frames == health.decode_errors == 0
        raw = {f"can0.{m.name}.{k}": v for m, data in ((engine, final), (diag, extended),
                                                       (wide, fd_payload))
               for k, v in m.decode(data, decode_choices=False, scaling=False).items()}
        assert values == raw
        assert values["can0.Wide.Last"] == 65000 and values["can0.Diag.Dtc"] == 0xC0FFEE


def test_kernel_filters_keep_unplanned_frames_out_of_python(tmp_path):
    config, database = agent_config(tmp_path)
    engine = database.get_message_by_name("Engine")
    unplanned = database.get_message_by_name("Unplanned")
    with running_agent(config) as agent, sender("vcan0") as bus:
        health = agent.stores["can0"].health
        planned_sent = 0
        for i in range(400):
            bus.send(can.Message(arbitration_id=unplanned.frame_id, data=bytes([i % 256] * 8),
                                 is_extended_id=False))
            bus.send(can.Message(arbitration_id=0x7AB, data=bytes(8), is_extended_id=False))
            bus.send(can.Message(arbitration_id=0x1ABCDE, data=bytes(8), is_extended_id=True))
            if i % 4 == 0:
                bus.send(can.Message(arbitration_id=0x100, is_extended_id=False,
                                     data=engine.encode({"Speed": i / 10, "Gear": i % 16})))
                planned_sent += 1
        wait_for(lambda: health.frames >= planned_sent, f"{planned_sent} planned frames")
        # 1,200 unplanned frames were sent before the last planned one on the same socket:
        # had any passed the kernel filter, it would have been read first.
        assert health.frames == planned_sent == 100
        assert health.ignored == 0
        assert not agent.stores["can0"].ignored_ids
