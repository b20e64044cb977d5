"""The example vehicle database: its size, the names other code relies on, its features, and
that tools/gen-dbc regenerates it byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.decoding.dbc import load_dbc

REPO = Path(__file__).resolve().parents[3]
DBC = REPO / "dbc" / "vehicle.dbc"
GEN_DBC = REPO / "tools" / "gen_dbc.py"

REQUIRED = {
    "VCU_Status": ["IgnitionState", "Gear", "DriveReady"],
    "ESP_VehicleSpeed": ["VehicleSpeed"],
    "ESP_WheelSpeeds": ["WheelSpeed_FL", "WheelSpeed_FR", "WheelSpeed_RL", "WheelSpeed_RR"],
    "SUS_Height": ["SuspHeight_FL", "SuspHeight_FR", "SuspHeight_RL", "SuspHeight_RR"],
    "TPMS_Status": [f"Tire{kind}_{corner}" for kind in ("Pressure", "Temp")
                    for corner in ("FL", "FR", "RL", "RR")],
    "BMS_Pack": ["PackVoltage", "PackCurrent", "SOC", "SOH"],
    "BMS_CellVoltages": ["CellGroup"] + [f"CellVoltage_{i:02d}" for i in range(1, 97)],
    "BMS_CellTemps": ["ModuleTemp_01_1", "ModuleTemp_24_3"],
    "CHG_Status": ["ChargingState", "ChargePower"],
    "INV_Motor": ["MotorTorque", "MotorSpeed"],
    "IC_Odometer": ["Odometer"],
    "BCM_Doors": ["TrunkOpen"],
}


@pytest.fixture(scope="module")
def db():
    return load_dbc([DBC]).database


def signal(db, message, name):
    return db.get_message_by_name(message).get_signal_by_name(name)


def test_800_plus_signals_on_a_bus_of_at_most_1500_frames_per_second(db):
    assert sum(len(message.signals) for message in db.messages) >= 800
    assert all(message.cycle_time in (10, 20, 50, 100, 200, 500, 1000)
               for message in db.messages)
    assert sum(1000 / message.cycle_time for message in db.messages) <= 1500
    assert {message.senders[0] for message in db.messages} >= {
        "VCU", "INV", "BMS", "CHG", "ESP", "SUS", "TPMS", "BCM", "HVAC", "ADAS", "IC", "DIAG"}


@pytest.mark.parametrize("message, signals", REQUIRED.items())
def test_the_names_other_code_relies_on_exist(db, message, signals):
    names = {s.name for s in db.get_message_by_name(message).signals}
    assert set(signals) <= names


def test_drive_state_signals_are_enums(db):
    assert signal(db, "VCU_Status", "IgnitionState").choices == {
        0: "Off", 1: "Accessory", 2: "On", 3: "Start"}
    assert {0: "P", 1: "R", 2: "N", 3: "D"}.items() <= signal(db, "VCU_Status", "Gear"
                                                              ).choices.items()
    assert signal(db, "CHG_Status", "ChargingState").choices == {
        0: "NotConnected", 1: "Connected", 2: "Charging", 3: "Complete", 4: "Fault"}


def test_vehicle_speed_is_unsigned_16_bit_hundredths_of_kmh(db):
    speed = signal(db, "ESP_VehicleSpeed", "VehicleSpeed")
    assert (speed.length, speed.scale, speed.is_signed, speed.unit) == (16, 0.01, False, "km/h")


def test_suspension_heights_are_signed_big_endian_tenths_of_mm(db):
    message = db.get_message_by_name("SUS_Height")
    for height in message.signals:
        assert (height.byte_order, height.is_signed, height.scale, height.unit) == (
            "big_endian", True, 0.1, "mm")
    data = message.encode({"SuspHeight_FL": -12.3, "SuspHeight_FR": 0.5, "SuspHeight_RL": -25,
                           "SuspHeight_RR": 30})
    assert data[:2] == (-123).to_bytes(2, "big", signed=True)
    assert message.decode(data)["SuspHeight_RL"] == -25


def test_tire_temperatures_go_below_zero_and_pressures_are_kpa(db):
    assert signal(db, "TPMS_Status", "TireTemp_FL").minimum < 0
    assert signal(db, "TPMS_Status", "TirePressure_RR").unit == "kPa"


def test_pack_current_is_signed(db):
    current = signal(db, "BMS_Pack", "PackCurrent")
    assert current.is_signed and current.minimum < 0 < current.maximum and current.unit == "A"


def test_96_cell_voltages_four_per_page_of_a_multiplexed_message(db):
    message = db.get_message_by_name("BMS_CellVoltages")
    assert message.is_multiplexed()
    pages = {}
    for s in message.signals:
        if s.name.startswith("CellVoltage_"):
            (page,) = s.multiplexer_ids
            pages.setdefault(page, []).append(s.name)
            assert s.multiplexer_signal == "CellGroup" and s.unit == "mV"
    assert sorted(pages) == list(range(24))
    assert all(len(cells) == 4 for cells in pages.values())
    data = message.encode({"CellGroup": 5, "CellVoltage_21": 3801, "CellVoltage_22": 3802,
                           "CellVoltage_23": 3803, "CellVoltage_24": 3804,
                           "BMS_CellVoltages_Counter": 0})
    assert message.decode(data)["CellVoltage_24"] == 3804


def test_module_temperatures_are_signed_and_multiplexed(db):
    message = db.get_message_by_name("BMS_CellTemps")
    temps = [s for s in message.signals if s.name.startswith("ModuleTemp_")]
    assert len(temps) >= 48 and all(s.is_signed and s.multiplexer_ids for s in temps)


def test_motor_torque_is_an_ieee_float(db):
    torque = signal(db, "INV_Motor", "MotorTorque")
    assert torque.is_float and torque.length == 32
    assert signal(db, "INV_Motor", "MotorSpeed").is_signed


def test_odometer_is_big_endian_24_bits_or_more(db):
    odometer = signal(db, "IC_Odometer", "Odometer")
    assert odometer.byte_order == "big_endian" and odometer.length >= 24
    assert odometer.unit == "km"


def test_an_extended_id_and_a_64_byte_can_fd_message(db):
    dm1 = db.get_message_by_name("DIAG_DM1")
    assert dm1.is_extended_frame and dm1.frame_id > 0x7FF
    objects = db.get_message_by_name("ADAS_ObjectList")
    assert objects.is_fd and objects.length == 64
    assert sum(not m.is_fd for m in db.messages) == len(db.messages) - 1


def test_alive_counters_are_4_bit(db):
    counters = [s for m in db.messages for s in m.signals if s.name.endswith("_Counter")]
    assert len(counters) >= 5 and all(s.length == 4 for s in counters)


def test_a_mix_of_encodings_with_ranges_everywhere(db):
    signals = [s for m in db.messages for s in m.signals]
    assert all(s.minimum is not None and s.maximum is not None for s in signals)
    assert sum(s.byte_order == "big_endian" for s in signals) >= 10
    assert sum(s.is_signed for s in signals) >= 50
    assert sum(s.is_float for s in signals) >= 2
    assert sum(bool(s.choices) for s in signals) >= 100
    physical = [s for s in signals if not s.choices and s.unit]
    assert len(physical) >= 400


def test_every_signal_start_value_is_in_range(db):
    for message in db.messages:
        for s in message.signals:
            if s.initial is not None and not s.choices:
                assert s.minimum <= s.initial <= s.maximum, (message.name, s.name)


def test_gen_dbc_writes_the_committed_file_byte_for_byte(tmp_path):
    output = tmp_path / "vehicle.dbc"
    result = subprocess.run([sys.executable, str(GEN_DBC), "--output", str(output)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == DBC.read_bytes()
    assert "signals" in result.stdout


def test_the_tool_runs_in_the_project_venv_from_any_shell():
    result = subprocess.run([str(REPO / "tools" / "gen-dbc"), "--help"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tools/gen-dbc")
