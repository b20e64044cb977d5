"""What every figure shares: the result record, medians of repeated runs, a scratch agent config."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import can

REPO = Path(__file__).resolve().parents[3]
VEHICLE_DBC = REPO / "dbc" / "vehicle.dbc"
DRIVE_LOG = REPO / "dbc" / "drive.log.gz"


@dataclass
class Figure:
    """One measured figure: the agent's value, the same-run baseline, and the target verdict.

    `ratio` is baseline / value for "less is better" figures, so a bigger ratio is better;
    `met` is None when the figure has no target to meet.
    """

    key: str
    title: str
    unit: str
    value: float
    target: str
    met: bool | None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    runs: int = 1
    details: dict[str, float | int | str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"key": self.key, "title": self.title, "unit": self.unit, "value": self.value,
                "baseline": self.baseline, "baseline_name": self.baseline_name,
                "ratio": self.ratio, "target": self.target, "met": self.met, "runs": self.runs,
                "details": self.details}


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed_runs(run: Callable[[], float], repeats: int) -> list[float]:
    """Call `run` (which returns its own measurement) `repeats` times."""
    return [run() for _ in range(repeats)]


def cpu_seconds() -> float:
    """Process CPU time (user + system, every thread): what the vehicle's CPU pays."""
    return time.process_time()


def drive_frames(limit: int | None = None) -> Iterator[can.Message]:
    """Frames of the bundled drive (every one encoded from dbc/vehicle.dbc by tools/simulate)."""
    for count, frame in enumerate(can.LogReader(str(DRIVE_LOG))):
        if limit is not None and count >= limit:
            return
        yield frame


def agent_config_text(*, sources: list[tuple[str, str]], key: Path, state: Path,
                      port: int = 1883, memory_mb: float | None = None, extra: str = "") -> str:
    """An agent config: one virtual-bus source per (name, channel) on the bundled DBC, every
    signal sampled at 1 Hz (two as stats, as the shipped config does), plaintext uplink."""
    parts = ['version = 1\n[vehicle]\nid = "bench-0001"\n']
    for name, channel in sources:
        parts.append(f'[[sources]]\nname = "{name}"\ntype = "virtual"\nchannel = "{channel}"\n'
                     f'dbc = ["{VEHICLE_DBC}"]\n')
    parts.append('[sampling]\nperiod = 1.0\n')
    for name, _ in sources:
        parts.append(f'[[sampling.signals]]\nmatch = "{name}.*"\n'
                     f'[[sampling.signals]]\nmatch = "{name}.ESP_VehicleSpeed.VehicleSpeed"\n'
                     f'mode = "stats"\n'
                     f'[[sampling.signals]]\nmatch = "{name}.BMS_Pack.PackCurrent"\n'
                     f'mode = "stats"\n')
    if memory_mb is not None:
        parts.append(f"[ring]\nmemory_mb = {memory_mb}\n")
    parts.append(f'[keys]\nsigning_key = "{key}"\n[state]\ndirectory = "{state}"\n'
                 f'[uplink]\nhost = "127.0.0.1"\nport = {port}\ntls = false\n'
                 f'[ota]\nenabled = false\n{extra}')
    return "\n".join(parts)
