"""Figure 4: resident memory of the running agent with 1,000 sampled signals, and its drift.

A real `python -m agent run` with two sources replaying the bundled drive as fast as they can
(`speed = 0`, looping: vehicle hours pass in wall-clock minutes), 1,000 signals sampled
(every signal of can0 plus the first ones of can1), delivering to a plain local Mosquitto.
RSS (VmRSS) is read from /proc every half second: the figure is the RSS at the end of the
warm-up (the first quarter of the soak), the drift is the growth from there to the end.
Same-run baseline: a bare interpreter that imports cantools and python-can and parses the
same DBC (what any Python CAN logger starts from).

offboard/devkit/bench/memory_steps.py measures where the memory goes, step by step.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.bench.common import REPO, VEHICLE_DBC, Figure, median
from devkit.bench.startup import log_tail, spawn, stop, write_config

TARGET_MB = 60.0
TARGET_DRIFT = 0.05
SIGNALS = 1_000


def run(quick: bool) -> Figure:
    soak = 16.0 if quick else 240.0
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        from devkit.broker import MosquittoBroker

        with MosquittoBroker(Path(scratch) / "broker", None) as broker:
            config = _config(Path(scratch), broker.port)
            samples, vehicle_seconds = _soak(config, soak)
    warm_at = soak / 4
    warm = median([rss for at, rss in samples if warm_at - 1.5 <= at <= warm_at + 1.5])
    final = median([rss for at, rss in samples[-4:]])
    drift = (final - warm) / warm
    baseline = _baseline_rss()
    breakdown = breakdown_steps()
    floor = dict(breakdown)["ring_default"]
    floor_without_numpy = dict(breakdown_steps(with_numpy=False))["ring_default"]
    return Figure(
        key="memory_rss_mb", title=f"RSS with {SIGNALS:,} sampled signals, and soak drift",
        unit="MB", value=round(warm, 1), baseline=round(baseline, 1),
        baseline_name="python + cantools + python-can + the parsed DBC",
        ratio=round(baseline / warm, 2),
        target=f"≤ {TARGET_MB:g} MB and ≤ {TARGET_DRIFT:.0%} growth after warm-up",
        met=warm <= TARGET_MB and drift <= TARGET_DRIFT, runs=1,
        details={"drift_percent": round(drift * 100, 2), "final_mb": round(final, 1),
                 "peak_mb": round(max(rss for _, rss in samples), 1),
                 "soak_wall_s": soak, "soak_vehicle_hours": round(vehicle_seconds / 3600, 2),
                 # The libraries, the parsed DBC and the ring before any agent module: what
                 # any agent on these parts starts from (docs/performance.md).
                 "floor_mb": round(floor, 1),
                 "floor_without_numpy_mb": round(floor_without_numpy, 1),
                 **{f"step_{name}_mb": round(mb, 1) for name, mb in breakdown}})


def _config(directory: Path, port: int) -> Path:
    from agent.config.schema import SamplingConfig
    from agent.decoding.dbc import load_dbc
    from agent.sampling.plan import build_plan

    database = load_dbc([VEHICLE_DBC]).database
    plan = build_plan(SamplingConfig(), {"can0": database, "can1": database})
    extra = [s.key for s in plan.signals[:SIGNALS] if s.source == "can1"]
    config = write_config(directory, speed=0, loop=True, port=port)
    text = config.read_text()
    second = text[text.index("[[sources]]"):text.index("[[sampling.signals]]")]
    rules = "".join(f'[[sampling.signals]]\nmatch = "{key}"\n' for key in extra)
    text = text.replace("[[sampling.signals]]", second.replace('"can0"', '"can1"')
                        + "[[sampling.signals]]", 1)
    text = text.replace("[keys]", rules + "[keys]")
    config.write_text(text)
    return config


def _soak(config: Path, seconds: float) -> tuple[list[tuple[float, float]], float]:
    log = config.parent / "agent.log"
    process = spawn(config, log=log)
    samples = []
    try:
        started = time.monotonic()
        while (at := time.monotonic() - started) < seconds:
            if process.poll() is not None:
                raise RuntimeError(f"the agent exited with {process.returncode} during the "
                                   f"soak:\n{log_tail(log)}")
            samples.append((at, rss_mb(process.pid)))
            time.sleep(0.5)
    finally:
        stop(process)
    return samples, _vehicle_seconds(log)


def _vehicle_seconds(log: Path) -> float:
    """How much vehicle time the soak covered: the agent logs each sealed one-minute batch."""
    sealed = re.findall(r"sealed batch (\d+)", log.read_text(errors="replace"))
    return 60.0 * (int(sealed[-1]) + 1) if sealed else 0.0


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def _baseline_rss() -> float:
    code = ("import sys, can, cantools; db = cantools.database.load_file(sys.argv[1]); "
            "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(VEHICLE_DBC)], check=True,
                         capture_output=True, text=True).stdout
    return int(out) / 1024


def breakdown_steps(with_numpy: bool = True) -> list[tuple[str, float]]:
    """RSS after each step of an agent's start, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("memory_steps.py")),
                          str(VEHICLE_DBC), *([] if with_numpy else ["--without-numpy"])],
                         check=True,
                         capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    return [(name, mb) for name, mb in json.loads(out)]


