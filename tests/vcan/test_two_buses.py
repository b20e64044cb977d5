"""Two SocketCAN buses at once, each with its own DBC: frames stay with their bus."""

from __future__ import annotations

import can
import cantools

from tests.helpers.agent_setup import BUNDLED_DBC
from tests.helpers.dbc_fixtures import write_small_dbc
from tests.vcan.conftest import running_agent, sender, wait_for, write_config


def test_vcan0_and_vcan1_with_different_dbcs(tmp_path):
    small = write_small_dbc(tmp_path)
    config = write_config(tmp_path, f"""
[[sources]]
name = "body"
type = "socketcan"
channel = "vcan0"
dbc = ["{BUNDLED_DBC}"]

[[sources]]
name = "chassis"
type = "socketcan"
channel = "vcan1"
dbc = ["{small}"]
""")
    vehicle = cantools.database.load_file(BUNDLED_DBC)
    small_db = cantools.database.load_file(small)
    speed = vehicle.get_message_by_name("ESP_VehicleSpeed")
    speed_data = speed.encode({"VehicleSpeed": 87.5, "VehicleSpeedValid": 1,
                               "DirectionOfTravel": 1, "VehicleStandstill": 0,
                               "ESP_VehicleSpeed_Counter": 7, "ESP_VehicleSpeed_Checksum": 0x5A})
    chassis = small_db.get_message_by_name("Chassis")
    chassis_data = chassis.encode({"Height": -12.3, "Odo": 123456})
    # Chassis (0x200) is not in the vehicle DBC: sent on vcan0, only the kernel sees it.
    with running_agent(config) as agent, sender("vcan0") as bus0, sender("vcan1") as bus1:
        body, rear = agent.stores["body"].health, agent.stores["chassis"].health
        bus1.send(can.Message(arbitration_id=0x200, data=chassis_data, is_extended_id=False))
        bus0.send(can.Message(arbitration_id=0x200, data=chassis_data, is_extended_id=False))
        bus0.send(can.Message(arbitration_id=speed.frame_id, data=speed_data,
                              is_extended_id=speed.is_extended_frame))
        wait_for(lambda: body.frames >= 1 and rear.frames >= 1, "a frame on each bus")
        values = {p.key: v for store in agent.stores.values()
                  for p, v, _ in store.current_values()}
    assert (body.frames, rear.frames) == (1, 1)
    assert values["chassis.Chassis.Odo"] == 123456
    assert values["chassis.Chassis.Height"] == -123  # raw: 0.1 mm per bit
    raw_speed = speed.decode(speed_data, decode_choices=False, scaling=False)["VehicleSpeed"]
    assert values["body.ESP_VehicleSpeed.VehicleSpeed"] == raw_speed
    assert not any(key.startswith("body.") and "Chassis" in key for key in values)
    assert {k.split(".")[0] for k in values} == {"body", "chassis"}
