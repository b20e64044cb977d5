"""canplayer replays the bundled drive onto vcan0 while the agent samples it: the sampled
values equal cantools' decode of what candump recorded on the same interface."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest
from fleet.backend import Backend, load_keyring

from agent.decoding.dbc import load_dbc
from agent.output.spool import Spool
from tests.helpers.agent_setup import BUNDLED_DBC, BUNDLED_DRIVE
from tests.helpers.support import require_tool
from tests.integration.test_end_to_end import STATS_SIGNAL, reference_samples
from tests.vcan.conftest import receivers, running_agent, wait_for, write_config

# Twelve seconds from the middle of the drive (~10,000 frames, every ECU awake).
SLICE_START, SLICE_SECONDS = 30, 12


def drive_slice(path: Path) -> int:
    """Lines of the bundled drive in the slice, as a candump log; returns the frame count."""
    with gzip.open(BUNDLED_DRIVE, "rt", encoding="ascii") as log:
        lines = [line for line in log]
    begin = float(lines[0][1:lines[0].index(")")]) + SLICE_START
    kept = [line for line in lines
            if begin <= float(line[1:line.index(")")]) < begin + SLICE_SECONDS]
    path.write_text("".join(kept), encoding="ascii")
    return len(kept)


def spooled_rows(state: Path, public_key: Path) -> list[dict]:
    keyring, bindings = load_keyring([f"vcan-0001={public_key}"])
    backend = Backend(keyring, bindings)
    spool = Spool(state / "spool.sqlite", 64 * 2**20)
    try:
        rows = []
        for batch in spool.next_batches(10_000):
            receipt = backend.receive(batch.envelope)
            assert receipt.ok, receipt.error
            rows.extend(backend.rows(receipt.body) or ())
    finally:
        spool.close()
    assert backend.undecodable == 0
    return rows


def test_canplayer_drive_sampled_equals_cantools_decode_of_the_same_frames(tmp_path):
    canplayer, candump = require_tool("canplayer"), require_tool("candump")
    played = drive_slice(tmp_path / "slice.log")
    config = write_config(tmp_path, f"""
[[sources]]
name = "can0"
type = "socketcan"
channel = "vcan0"
fd = true  # the drive has a CAN FD message (0x2C3): a classic socket never sees it
dbc = ["{BUNDLED_DBC}"]
""", f"""
[[sampling.signals]]
match = "can0.*"

[[sampling.signals]]
match = "{STATS_SIGNAL}"
mode = "stats"
""")
    recorded = tmp_path / "recorded.log"
    listeners = receivers("rcvlist_all", "vcan0")
    with recorded.open("w") as out:
        # An 8 MB receive queue: with the default (~200 frames) candump lost frames in a VM
        # on a loaded host, and the reference must hold every frame the agent read.
        recorder = subprocess.Popen([candump, "-L", "-r", str(8 * 2**20), "vcan0"],
                                    stdout=out)
    try:
        wait_for(lambda: receivers("rcvlist_all", "vcan0") > listeners, "candump to listen")
        with running_agent(config) as agent:
            health = agent.stores["can0"].health
            planned_ids = agent.stores["can0"].frame_ids
            subprocess.run([canplayer, "-I", str(tmp_path / "slice.log"), "vcan0=can0"],
                           check=True, timeout=300)
            planned = sum(1 for line in _read_when_complete(recorded, played)
                          if int(line.split()[2].split("#")[0], 16) in planned_ids)
            wait_for(lambda: health.frames >= planned, f"the agent to read {planned} frames",
                     timeout=300, state=lambda: health)
            assert health.frames == planned
            assert health.ignored == health.decode_errors == health.short_frames == 0
    finally:
        recorder.terminate()
        recorder.wait(timeout=30)

    expected, speed_stats = reference_samples(recorded, BUNDLED_DBC)
    last_tick = max(t for _, t in expected)
    rows = spooled_rows(tmp_path / "state", tmp_path / "vehicle.pub")
    got_last, got_stats, stats_count = {}, {}, 0
    for row in rows:
        key = (row["signal"], round(row["time"] * 1000))
        if row["signal"] == STATS_SIGNAL:
            stats_count += row["count"]
            # A row covers the second from its time on; the reference stops at the last tick.
            if key[1] < last_tick:
                got_stats[key[1] // 1000] = row
        elif key[1] <= last_tick:  # after the log's end the agent goes on sampling idle time
            got_last[key] = row["value"]
    expected_last = {k: v for k, v in expected.items() if k[0] != STATS_SIGNAL}
    assert len({signal for signal, _ in got_last}) >= 500
    assert got_last.keys() == expected_last.keys()
    assert [(k, got_last[k], v) for k, v in expected_last.items() if got_last[k] != v] == []
    assert set(got_stats) == set(speed_stats)
    for second, values in speed_stats.items():
        row = got_stats[second]
        assert (row["min"], row["max"], row["count"]) == (min(values), max(values), len(values))
        assert row["mean"] == pytest.approx(sum(values) / len(values), rel=1e-9)
    # Every speed frame candump saw is in exactly one stats row.
    speed = load_dbc([BUNDLED_DBC]).database.get_message_by_name("ESP_VehicleSpeed")
    speed_id = f"{speed.frame_id:03X}"
    assert stats_count == sum(1 for line in recorded.read_text().splitlines()
                              if line.split()[2].startswith(f"{speed_id}#"))


def _read_when_complete(recorded: Path, frames: int) -> list[str]:
    """candump's lines once it has written all `frames` (it writes them as they come)."""
    lines: list[str] = []

    def complete() -> bool:
        nonlocal lines
        lines = recorded.read_text().splitlines()
        return len(lines) >= frames

    wait_for(complete, f"candump to record {frames} frames")
    assert len(lines) == frames
    return lines
