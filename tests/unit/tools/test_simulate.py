"""tools/simulate: a log python-can reads and cantools decodes, at the DBC's cycle times, that
tells the drive's story (shop stop with a loaded trunk, DC charge); and the bundled drive."""

from __future__ import annotations

import bisect
import itertools
import statistics
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import can
import pytest
from cantools.database.namedsignalvalue import NamedSignalValue

from agent.decoding.dbc import load_dbc

REPO = Path(__file__).resolve().parents[3]
DBC = REPO / "dbc" / "vehicle.dbc"
SIMULATE = REPO / "tools" / "simulate.py"
BUNDLED = REPO / "dbc" / "drive.log.gz"
START = 1780300800  # the default start, 2026-06-01T08:00:00Z
DURATION = 60


def run_simulate(output: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(SIMULATE), "--output", str(output), *args],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result


@dataclass
class Drive:
    """A decoded log: per message, the frames' times (from the start) and values."""

    frames: list[can.Message]
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    values: dict[str, list[dict]] = field(default_factory=lambda: defaultdict(list))

    def series(self, message: str, signal: str) -> list[tuple[float, object]]:
        return [(t, v[signal]) for t, v in zip(self.times[message], self.values[message],
                                               strict=True) if signal in v]

    def first(self, message: str, signal: str, value: object, after: float = 0.0) -> float:
        return next(t for t, v in self.series(message, signal) if v == value and t >= after)


def decode(path: Path, database) -> Drive:
    drive = Drive(list(can.LogReader(str(path))))
    for frame in drive.frames:
        message = database.get_message_by_frame_id(frame.arbitration_id)
        decoded = message.decode(bytes(frame.data))
        drive.times[message.name].append(frame.timestamp - START)
        drive.values[message.name].append(
            {k: v.name if isinstance(v, NamedSignalValue) else v for k, v in decoded.items()})
    return drive


@pytest.fixture(scope="module")
def database():
    return load_dbc([DBC]).database


@pytest.fixture(scope="module")
def drive(tmp_path_factory, database):
    path = tmp_path_factory.mktemp("drive") / "drive.log.gz"
    run_simulate(path, "--duration", str(DURATION), "--seed", "7")
    return decode(path, database)


def test_python_can_reads_classic_fd_and_extended_frames(drive):
    assert len(drive.frames) > 30_000
    assert any(f.is_fd and len(f.data) == 64 and f.bitrate_switch for f in drive.frames)
    assert any(f.is_extended_id and f.arbitration_id == 0x18FECA00 for f in drive.frames)
    stamps = [f.timestamp for f in drive.frames]
    assert stamps == sorted(stamps)
    assert stamps[0] >= START and stamps[-1] < START + DURATION


def test_every_message_is_sent_and_every_value_is_within_its_range(drive, database):
    assert set(drive.times) == {m.name for m in database.messages}
    for name, rows in drive.values.items():
        message = database.get_message_by_name(name)
        for row in rows:
            for key, value in row.items():
                s = message.get_signal_by_name(key)
                if not isinstance(value, str):
                    assert s.minimum - 1e-9 <= value <= s.maximum + 1e-9, (name, key, value)


@pytest.mark.parametrize("message", ["ESP_VehicleSpeed", "BMS_Pack", "SUS_Height",
                                     "ADAS_ObjectList", "TPMS_Status", "DIAG_DM1"])
def test_messages_keep_their_cycle_time(drive, database, message):
    cycle = database.get_message_by_name(message).cycle_time / 1000
    times = drive.times[message]
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a < 2 * cycle]
    assert statistics.mean(gaps) == pytest.approx(cycle, rel=0.1)
    assert statistics.median(gaps) == pytest.approx(cycle, rel=0.1)
    assert 0.75 * cycle < min(gaps) and max(gaps) < 1.25 * cycle  # jitter, not lost frames


def test_multiplexed_pages_follow_each_other(drive):
    groups = [v["CellGroup"] for v in drive.values["BMS_CellVoltages"]]
    assert set(groups) == set(range(24))
    assert all(b == (a + 1) % 24 for a, b in itertools.pairwise(groups))
    assert "CellVoltage_96" in drive.values["BMS_CellVoltages"][groups.index(23)]


def test_alive_counters_roll_over(drive):
    counters = [v["VCU_Status_Counter"] for v in drive.values["VCU_Status"]]
    assert all(b == (a + 1) % 16 for a, b in itertools.pairwise(counters))


def test_the_drive_starts_parked_and_switched_off(drive):
    first = drive.values["VCU_Status"][0]
    assert (first["IgnitionState"], first["Gear"], first["DriveReady"]) == (
        "Off", "P", "NotReady")
    assert "ESP_VehicleSpeed" not in drive.times or drive.times["ESP_VehicleSpeed"][0] > 1.0
    ignition = [v for _, v in drive.series("VCU_Status", "IgnitionState")]
    assert list(dict.fromkeys(ignition))[:4] == ["Off", "Accessory", "Start", "On"]


def test_speed_wheels_and_motor_agree(drive):
    motor_times = drive.times["INV_Motor"]
    ratios = []
    for t, speed in drive.series("ESP_VehicleSpeed", "VehicleSpeed"):
        i = min(bisect.bisect_left(motor_times, t), len(motor_times) - 1)
        if speed > 30 and abs(motor_times[i] - t) < 0.02:
            ratios.append(drive.values["INV_Motor"][i]["MotorSpeed"] / speed)
    assert len(ratios) > 100 and max(ratios) / min(ratios) < 1.05
    for wheels in drive.values["ESP_WheelSpeeds"]:
        speeds = [wheels[f"WheelSpeed_{c}"] for c in ("FL", "FR", "RL", "RR")]
        assert max(speeds) - min(speeds) < 0.1 * max(speeds) + 1


def test_odometer_counts_the_distance_driven(drive):
    speeds = drive.series("ESP_VehicleSpeed", "VehicleSpeed")
    km = sum(speed / 3600 * (t1 - t0) for (t0, speed), (t1, _) in itertools.pairwise(speeds))
    odometer = [v for _, v in drive.series("IC_Odometer", "Odometer")]
    assert odometer == sorted(odometer)
    assert odometer[-1] - odometer[0] == pytest.approx(km, abs=0.15)
    assert km > 0.3


def test_loading_the_trunk_at_the_shop_sinks_the_rear_and_raises_tire_pressure(drive):
    opened = drive.first("BCM_Doors", "TrunkOpen", "Open")
    closed = drive.first("BCM_Doors", "TrunkOpen", "Closed", after=opened)
    drives_off = next(t for t, v in drive.series("ESP_VehicleSpeed", "VehicleSpeed")
                      if t > closed and v > 0)

    def rear_height(start, end):
        rows = [v for t, v in zip(drive.times["SUS_Height"], drive.values["SUS_Height"],
                                  strict=True) if start <= t < end]
        return statistics.mean((r["SuspHeight_RL"] + r["SuspHeight_RR"]) / 2 for r in rows)

    before = rear_height(opened - 0.5, opened)
    after = rear_height(closed, closed + 0.5)
    assert 15 <= before - after <= 30

    for corner in ("RL", "RR"):
        pressures = drive.series("TPMS_Status", f"TirePressure_{corner}")
        empty = [p for t, p in pressures if t < opened][-1]
        loaded = [p for t, p in pressures if t < drives_off][-1]
        assert 2 <= loaded - empty <= 8


def test_charging_makes_the_pack_current_negative_and_soc_and_cells_rise(drive):
    started = drive.first("CHG_Status", "ChargingState", "Charging")
    charging = [(t, v) for t, v in zip(drive.times["BMS_Pack"], drive.values["BMS_Pack"],
                                       strict=True) if t >= started + 1.0]
    assert len(charging) > 20
    assert all(v["PackCurrent"] < 0 for _, v in charging)
    assert charging[-1][1]["SOC"] > charging[0][1]["SOC"]
    cells = [(t, v) for t, v in drive.series("BMS_CellVoltages", "CellVoltage_01")
             if t >= started + 1.0]
    assert cells[-1][1] > cells[0][1]
    ignition = [v for t, v in drive.series("VCU_Status", "IgnitionState") if t >= started]
    assert set(ignition) == {"Off"}


def test_cell_voltages_spread_a_little(drive):
    page = drive.values["BMS_CellVoltages"][-1]
    stats = drive.values["BMS_CellStats"][-1]
    assert 3 <= stats["CellVoltageDelta"] <= 60
    assert all(3000 < v < 4250 for k, v in page.items() if k.startswith("CellVoltage_"))


def test_same_seed_same_log_other_seed_other_log(tmp_path):
    paths = [tmp_path / name for name in ("a.log", "b.log", "c.log")]
    for path, seed in zip(paths, ("5", "5", "6"), strict=True):
        run_simulate(path, "--duration", "5", "--seed", seed, "--channel", "vcan3")
    a, b, c = (path.read_bytes() for path in paths)
    assert a == b and a != c
    first = a.splitlines()[0].decode()
    assert first.startswith(f"({START}.") and " vcan3 " in first


def test_the_bundled_drive_is_four_minutes_that_cantools_decodes(database):
    assert BUNDLED.stat().st_size <= 4 * 1024 * 1024
    frames = list(can.LogReader(str(BUNDLED)))
    assert frames[-1].timestamp - frames[0].timestamp == pytest.approx(240, abs=1)
    for frame in frames:
        database.get_message_by_frame_id(frame.arbitration_id).decode(bytes(frame.data))
    assert any(f.is_fd for f in frames) and any(f.is_extended_id for f in frames)


def test_the_tool_runs_in_the_project_venv_from_any_shell():
    """`tools/simulate` finds cantools in .venv even when the caller's python has none."""
    result = subprocess.run([str(REPO / "tools" / "simulate"), "--help"], capture_output=True,
                            text=True, env={"PATH": "/usr/bin:/bin"}, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: tools/simulate")
