"""`edge-agent verify` and, through it, exactness on real cars: production DBCs (opendbc), several
buses in one log with jitter, messages that go quiet and come back, short frames, multiplexed
and CAN FD messages, at replay speeds 0, 1 and 10. cantools is the oracle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.decoding import frames as decode
from agent.runtime.verify import compare, verify
from tests.helpers.drive_replay import (
    assert_exact,
    replay_source,
    short_drive,
    write_verify_config,
)
from tests.helpers.traffic import Car, generate_log, group_cars, pick_opendbc

REPO = Path(__file__).resolve().parents[3]
CARS = group_cars(pick_opendbc(20))
RULES = """
[[sampling.signals]]
match = "*"

[[sampling.signals]]
match = "can1.*"
mode = "stats"
"""


def write_car(car: Car, folder: Path, *, duration: float, seed: int) -> tuple[Path, Path]:
    """A log of `car` and an agent config with one replay source per bus: every signal
    `last` each second, the second bus's also as `stats`, 10 s windows."""
    log = folder / "drive.log"
    generate_log(log, car.buses, duration=duration, seed=seed)
    sources = "".join(replay_source(f"can{i}", log, dbc.write(folder))
                      for i, dbc in enumerate(car.dbcs))
    return log, write_verify_config(folder, window=10.0, sources=sources, rules=RULES)


@pytest.mark.parametrize("car", CARS, ids=[car.name for car in CARS])
def test_generated_multi_bus_traffic_of_real_dbcs_is_sampled_exactly(car, tmp_path):
    log, config = write_car(car, tmp_path, duration=12.0, seed=len(car.name))
    report = verify(log, config_path=config, speed=0)
    assert_exact(report)
    totals = report.totals()
    assert totals["compared"] > 1000 and report.batches >= 2
    compared = {key.split(".")[0] for key, r in report.signals.items() if r.compared}
    assert compared == {f"can{i}" for i in range(len(car.dbcs))}


@pytest.mark.parametrize("speed", [1.0, 10.0])
def test_replay_speed_changes_nothing(speed, tmp_path):
    """Real time and 10x give exactly what speed 0 gives (all checked against cantools)."""
    log, config = write_car(CARS[0], tmp_path, duration=8.0, seed=11)
    assert_exact(verify(log, config_path=config, speed=speed))


def test_verify_reports_a_wrong_value(tmp_path, monkeypatch):
    """The comparison fails when the agent's decoding is off by one, both where cantools
    decodes a message for it and where it reads a signal's bits itself (the oracle decodes
    with cantools on its own, so it does not share the fault)."""
    log, config = write_car(CARS[0], tmp_path, duration=5.0, seed=3)
    real_decoder, real_reader = decode.message_decoder, decode.raw_reader

    def off_by_one(message):
        decoder = real_decoder(message)
        return lambda data: {name: value + 1 if isinstance(value, int) else value
                             for name, value in decoder(data).items()}

    def reader_off_by_one(signal):
        read = real_reader(signal)
        return None if read is None else (lambda data: read(data) + 1)

    monkeypatch.setattr(decode, "message_decoder", off_by_one)
    monkeypatch.setattr(decode, "raw_reader", reader_off_by_one)
    report = verify(log, config_path=config, speed=0)
    totals = report.totals()
    assert totals["mismatched"] > totals["compared"] // 2
    assert report.differences > 0


def test_compare_counts_missing_extra_and_nan_as_equal():
    class Plan:
        signals = ()

    expected = {("a", 1000): 1.5, ("a", 2000): float("nan"), ("b", 1000): 3}
    got = {("a", 1000): 1.5, ("a", 2000): float("nan"), ("b", 2000): 3}
    reports = compare(expected, got, Plan())
    assert (reports["a"].compared, reports["a"].differences) == (2, 0)
    assert (reports["b"].missing, reports["b"].extra) == (1, 1)


def test_the_command_line_on_the_bundled_drive(tmp_path):
    """As an engineer runs it: the bundled drive's first 40 s through the example DBC."""
    short = short_drive(tmp_path, 40)
    result = subprocess.run(
        [sys.executable, "-m", "agent", "--log-level", "ERROR", "verify", "--dbc",
         str(REPO / "dbc" / "vehicle.dbc"), "--json", str(short)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["ok"] is True and document["mismatched"] == 0
    assert document["compared"] > 20_000 and len(document["signals"]) > 800
    assert "exact" in result.stderr
