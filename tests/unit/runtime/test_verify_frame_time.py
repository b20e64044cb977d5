"""Modes `change` and `bounded` end to end: the agent replays a log, seals batches, the backend
decodes them, and `verify` holds them against cantools: every change present at its frame
time, every frame within ε of the `bounded` lines. On the bundled drive and on generated
traffic of real DBCs (random payloads: NaN, infinities, every bit pattern)."""

from __future__ import annotations

from pathlib import Path

from agent.config.schema import SamplingConfig, SignalRule
from agent.decoding.dbc import load_dbc
from agent.runtime.verify import SignalReport, check_frame_time, verify
from agent.sampling.plan import build_plan
from tests.helpers.drive_replay import (
    assert_exact,
    replay_source,
    short_drive,
    write_verify_config,
)
from tests.helpers.traffic import generate_log, group_cars, pick_opendbc

REPO = Path(__file__).resolve().parents[3]
RULES = """
[[sampling.signals]]
match = "*"
mode = "change"
heartbeat = 5.0

[[sampling.signals]]
match = "*Temp*"
mode = "bounded"
epsilon = 0.5

[[sampling.signals]]
match = "*Speed*"
mode = "bounded"
epsilon = 0.2
heartbeat = 3.0

[[sampling.signals]]
match = "*Current*"
mode = "change"
deadband = 1.5
"""


def test_bundled_drive_loses_no_change_and_stays_within_epsilon(tmp_path):
    log = short_drive(tmp_path, 20)
    config = write_verify_config(tmp_path, window=5.0, rules=RULES,
                                 sources=replay_source("can0", log, REPO / "dbc" / "vehicle.dbc"))
    report = verify(log, config_path=config, speed=0)
    assert_exact(report)
    bounded = [r for key, r in report.signals.items() if "Temp" in key or "Speed" in key]
    assert bounded and sum(r.compared for r in bounded) > 1000
    assert report.totals()["compared"] > 10_000 and report.batches >= 4


def test_generated_traffic_of_real_dbcs(tmp_path):
    """Random payloads make nearly every frame a change: one bus of a real car, 3 s."""
    car = group_cars(pick_opendbc(20))[1]
    log = tmp_path / "drive.log"
    generate_log(log, car.buses[:1], duration=3.0, seed=23)
    config = write_verify_config(tmp_path, window=5.0, rules=RULES,
                                 sources=replay_source("can0", log, car.dbcs[0].write(tmp_path)))
    report = verify(log, config_path=config, speed=0)
    assert_exact(report)
    assert report.totals()["compared"] > 1000


def test_a_lost_change_and_a_line_too_far_are_reported(tmp_path):
    """The check is not vacuous: drop one change, move one bounded point."""
    database = load_dbc([REPO / "dbc" / "vehicle.dbc"]).database
    plan = build_plan(SamplingConfig(signals=(
        SignalRule("can0.VCU_Status.Gear", mode="change"),
        SignalRule("can0.VCU_Status.AcceleratorPedal", mode="bounded", epsilon=1.0))),
        {"can0": database})
    gear, pedal = "can0.VCU_Status.Gear", "can0.VCU_Status.AcceleratorPedal"
    frames = {gear: [(0, 1), (10, 1), (20, 3), (30, 3), (40, 4)],
              pedal: [(0, 0), (10, 5), (20, 10)]}  # raw; pedal scale 0.4
    got = {gear: [(0, 1), (40, 4)], pedal: [(0, 0.0), (10, 3.5), (20, 4.0)]}
    reports: dict[str, SignalReport] = {}
    check_frame_time(plan, {"can0": database}, frames, got, reports, 60_000)
    assert (reports[gear].compared, reports[gear].missing, reports[gear].extra) == (2, 1, 0)
    assert reports[gear].examples[0]["time_ms"] == 20
    assert reports[pedal].mismatched == 1 and reports[pedal].extra == 1  # (10, 3.5) is no frame
