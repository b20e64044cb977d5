"""Figure 4: resident memory of the running agent with 1,000 sampled signals, and its drift.

A real `python -m agent run` with two sources replaying the bundled drive as fast as they can
(`speed = 0`, looping: vehicle hours pass in wall-clock minutes), 1,000 signals sampled
(every signal of can0 plus the first ones of can1), delivering to a plain local Mosquitto.
RSS (VmRSS) is read from /proc every half second: the figure is the RSS at the end of the
warm-up (the first quarter of the soak), the drift is the growth from there to the end.
Same-run baseline: a bare interpreter that imports cantools and python-can and parses the
same DBC (what any Python CAN logger starts from).

Vehicle time is what the batches the broker received cover: the sum of `t1 - t0` over the
distinct (boot, seq) (event time, from the frames' own timestamps), read by a subscriber that
verifies and decodes each batch as a backend would. Not the wall clock, and not a count of
batches times a nominal window (a partial window at each loop of the drive, a skipped quiet
window or a heartbeat would each be miscounted).

`python -m devkit.bench.memory --vehicle-hours 24` is the long soak (docs/performance.md):
the same agent on the drive thinned to one frame per message (and multiplexer page) a second,
the rate the 1 Hz plan samples at, so that a day of vehicle time fits in minutes; RSS is read
against vehicle time, and the drift is the median of the last vehicle hour against the median
of the second.

offboard/devkit/bench/memory_steps.py measures where the memory goes, step by step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import can

from devkit.bench.common import DRIVE_LOG, REPO, VEHICLE_DBC, Figure, median
from devkit.bench.startup import log_tail, spawn, stop, unit_environment, write_config

# Issue #26: RSS with 1,000 signals, absolute and above the floor (the libraries, the parsed DBC
# and the ring, measured in a fresh interpreter in the same run), and its drift over the soak.
TARGET_MB = 75.0
TARGET_ABOVE_FLOOR_MB = 10.0
TARGET_DRIFT = 0.02
SIGNALS = 1_000


def run(quick: bool) -> Figure:
    soak = 16.0 if quick else 240.0
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        from devkit.broker import MosquittoBroker

        with MosquittoBroker(Path(scratch) / "broker", None) as broker:
            config = _config(Path(scratch), broker.port)
            with BatchWindows(broker.port, Path(scratch) / "vehicle.pub") as windows:
                soaked, resident = _soak(config, windows, wall_s=soak)
    samples = [(at, rss) for at, _, rss in soaked]
    vehicle_seconds = soaked[-1][1]
    warm_at = soak / 4
    warm = median([rss for at, rss in samples if warm_at - 1.5 <= at <= warm_at + 1.5])
    final = median([rss for at, rss in samples[-4:]])
    drift = (final - warm) / warm
    baseline = _baseline_rss()
    breakdown = breakdown_steps()
    floor = dict(breakdown)["ring_default"]
    floor_without_numpy = dict(breakdown_steps(with_numpy=False))["ring_default"]
    above_floor = max(warm, final) - floor
    return Figure(
        key="memory_rss_mb", title=f"RSS with {SIGNALS:,} sampled signals, and soak drift",
        unit="MB", value=round(warm, 1), baseline=round(baseline, 1),
        baseline_name="python + cantools + python-can + the parsed DBC",
        ratio=round(baseline / warm, 2),
        target=f"≤ {TARGET_MB:g} MB, ≤ {TARGET_ABOVE_FLOOR_MB:g} MB above the floor, "
               f"≤ {TARGET_DRIFT:.0%} growth after warm-up",
        met=(max(warm, final) <= TARGET_MB and above_floor <= TARGET_ABOVE_FLOOR_MB
             and drift <= TARGET_DRIFT), runs=1,
        details={"drift_percent": round(drift * 100, 2), "final_mb": round(final, 1),
                 "above_floor_mb": round(above_floor, 1),
                 # At the end, from /proc/PID/smaps_rollup: the agent's own heap, arenas and
                 # stacks (anonymous) against the libraries' pages it maps (file).
                 **{f"final_{kind}_mb": round(mb, 1) for kind, mb in resident.items()},
                 "peak_mb": round(max(rss for _, rss in samples), 1),
                 "soak_wall_s": soak, "soak_vehicle_hours": round(vehicle_seconds / 3600, 2),
                 # The libraries, the parsed DBC and the ring before any agent module: what
                 # any agent on these parts starts from (docs/performance.md).
                 "floor_mb": round(floor, 1),
                 "floor_without_numpy_mb": round(floor_without_numpy, 1),
                 **{f"step_{name}_mb": round(mb, 1) for name, mb in breakdown}})


def _config(directory: Path, port: int, drive: Path = DRIVE_LOG) -> Path:
    from agent.config.schema import SamplingConfig
    from agent.decoding.dbc import load_dbc
    from agent.sampling.plan import build_plan

    database = load_dbc([VEHICLE_DBC]).database
    plan = build_plan(SamplingConfig(), {"can0": database, "can1": database})
    extra = [s.key for s in plan.signals[:SIGNALS] if s.source == "can1"]
    config = write_config(directory, speed=0, loop=True, port=port)
    text = config.read_text().replace(f'path = "{DRIVE_LOG}"', f'path = "{drive}"')
    second = text[text.index("[[sources]]"):text.index("[[sampling.signals]]")]
    rules = "".join(f'[[sampling.signals]]\nmatch = "{key}"\n' for key in extra)
    text = text.replace("[[sampling.signals]]", second.replace('"can0"', '"can1"')
                        + "[[sampling.signals]]", 1)
    text = text.replace("[keys]", rules + "[keys]")
    config.write_text(text)
    return config


class BatchWindows:
    """Subscribes to the bench vehicle's telemetry; keeps (boot, seq, t0, t1) of every batch
    that verifies and decodes (anything else is counted in `rejected`)."""

    def __init__(self, port: int, public_key: Path, prefix: str = "fleet") -> None:
        import paho.mqtt.client as mqtt

        from agent.wire.keys import key_id, load_public_key

        key = load_public_key(public_key)
        self._keys = {key_id(key): key}
        self._lock = threading.Lock()
        self._windows: list[tuple[bytes, int, int, int]] = []
        self.rejected = 0
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self._client.on_connect = lambda client, *_: client.subscribe(
            f"{prefix}/+/telemetry", qos=1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._received
        self._port = port

    def __enter__(self) -> BatchWindows:
        self._client.connect("127.0.0.1", self._port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the bench's subscriber got no SUBACK from the broker")
        return self

    def __exit__(self, *_: object) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _received(self, client: object, userdata: object, message: object) -> None:
        from agent.errors import WireFormatError
        from agent.output.batch import open_batch

        try:
            body = open_batch(message.payload, self._keys)  # type: ignore[attr-defined]
        except WireFormatError:
            with self._lock:
                self.rejected += 1
            return
        with self._lock:
            self._windows.append((body.boot, body.seq, body.t0_ms, body.t1_ms))

    def vehicle_seconds(self) -> float:
        with self._lock:
            return vehicle_seconds(list(self._windows))


def vehicle_seconds(windows: Iterable[tuple[bytes, int, int, int]]) -> float:
    """Vehicle time the batches cover: t1 - t0 summed over distinct (boot, seq), so that a
    batch the broker delivered twice counts once, and a partial window counts what it holds."""
    spans = {(boot, seq): t1 - t0 for boot, seq, t0, t1 in windows}
    return sum(spans.values()) / 1000


def _soak(config: Path, windows: BatchWindows, *, wall_s: float,
          vehicle_s: float | None = None,
          every_s: float = 0.5) -> tuple[list[tuple[float, float, float]], dict[str, float]]:
    """Run the agent for `wall_s` (or until the batches cover `vehicle_s`): (wall s, vehicle
    s, RSS MB) every `every_s`, and the RSS split (`resident_split`) before the stop."""
    log = config.parent / "agent.log"
    process = spawn(config, log=log)
    samples = []
    resident: dict[str, float] = {}
    try:
        started = time.monotonic()
        while (at := time.monotonic() - started) < wall_s:
            if process.poll() is not None:
                raise RuntimeError(f"the agent exited with {process.returncode} during the "
                                   f"soak:\n{log_tail(log)}")
            covered = windows.vehicle_seconds()
            samples.append((at, covered, rss_mb(process.pid)))
            resident = resident_split(process.pid)
            if vehicle_s is not None and covered >= vehicle_s:
                break
            time.sleep(every_s)
    finally:
        stop(process)
    # The last batches (the partial window sealed at the stop) arrive after it.
    deadline = time.monotonic() + 5
    covered = samples[-1][1] if samples else 0.0
    while time.monotonic() < deadline and windows.vehicle_seconds() == covered:
        time.sleep(0.1)
    if samples:
        at, _, rss = samples[-1]
        samples[-1] = (at, windows.vehicle_seconds(), rss)
    return samples, resident


def thin_drive(target: Path, every_s: float = 1.0) -> Path:
    """The bundled drive with one frame per message (and multiplexer page) every `every_s`:
    what a 1 Hz plan samples, without the frames in between that only replace each other."""
    import cantools

    database = cantools.database.load_file(str(VEHICLE_DBC))
    multiplexed = {m.frame_id: m for m in database.messages if m.is_multiplexed()}
    kept: dict[tuple[int, int], float] = {}
    with can.Logger(str(target)) as writer:
        for frame in can.LogReader(str(DRIVE_LOG)):
            page = 0
            if (message := multiplexed.get(frame.arbitration_id)) is not None:
                decoded = message.decode(frame.data, decode_choices=False, scaling=False,
                                         allow_truncated=True)
                page = sum(int(decoded.get(s.name, 0)) << (8 * n) for n, s in
                           enumerate(s for s in message.signals if s.is_multiplexer))
            key = (frame.arbitration_id, page)
            if frame.timestamp - kept.get(key, -every_s) >= every_s:
                kept[key] = frame.timestamp
                writer.on_message_received(frame)
    return target


def long_soak(vehicle_hours: float, wall_limit_s: float,
              frame_every_s: float = 1.0) -> dict[str, object]:
    """The 24-vehicle-hour soak on the thinned drive; RSS against vehicle time."""
    from devkit.broker import MosquittoBroker

    with tempfile.TemporaryDirectory(prefix="bench-soak-") as scratch:
        directory = Path(scratch)
        drive = thin_drive(directory / "drive-thinned.log", frame_every_s)
        with MosquittoBroker(directory / "broker", None) as broker:
            config = _config(directory, broker.port, drive)
            with BatchWindows(broker.port, directory / "vehicle.pub") as windows:
                samples, resident = _soak(config, windows, wall_s=wall_limit_s,
                                          vehicle_s=vehicle_hours * 3600, every_s=2.0)
                rejected = windows.rejected
    covered = samples[-1][1] / 3600
    second = [rss for _, at, rss in samples if 3600 <= at < 7200]
    last = [rss for _, at, rss in samples if at >= samples[-1][1] - 3600]
    start, end = median(second or [samples[0][2]]), median(last)
    after_warmup = [rss for _, at, rss in samples if at >= 3600]
    floor = dict(breakdown_steps())["ring_default"]
    return {"vehicle_hours": round(covered, 2), "wall_s": round(samples[-1][0], 1),
            "frame_every_s": frame_every_s,
            "speed_x": round(samples[-1][1] / samples[-1][0], 1),
            "rss_start_mb": round(start, 1), "rss_end_mb": round(end, 1),
            "drift_percent": round((end - start) / start * 100, 2),
            "rss_min_after_first_hour_mb": round(min(after_warmup or [start]), 1),
            "rss_max_after_first_hour_mb": round(max(after_warmup or [start]), 1),
            "floor_mb": round(floor, 1), "above_floor_mb": round(end - floor, 1),
            "rejected_batches": rejected,
            **{f"end_{kind}_mb": round(mb, 1) for kind, mb in resident.items()},
            "rss_by_vehicle_hour_mb": [round(median(hour), 1) for hour in _by_hour(samples)]}


def _by_hour(samples: list[tuple[float, float, float]]) -> list[list[float]]:
    hours: dict[int, list[float]] = {}
    for _, at, rss in samples:
        hours.setdefault(int(at // 3600), []).append(rss)
    return [hours[hour] for hour in sorted(hours)]


def rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def resident_split(pid: int | str = "self") -> dict[str, float]:
    """RSS in MB split as /proc/PID/smaps_rollup counts it: `anon` (heap, malloc arenas,
    Python's arenas, thread stacks, numpy's arrays: what the process allocated) and `file`
    (pages of the libraries and files it maps, which the kernel may share and drop)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) / 1024
    return {"anon": fields["Anonymous"], "file": fields["Rss"] - fields["Anonymous"]}


def _baseline_rss() -> float:
    code = ("import sys, can, cantools; db = cantools.database.load_file(sys.argv[1]); "
            "print(open('/proc/self/status').read().split('VmRSS:')[1].split()[0])")
    out = subprocess.run([sys.executable, "-c", code, str(VEHICLE_DBC)], check=True,
                         capture_output=True, text=True).stdout
    return int(out) / 1024


def breakdown_steps(with_numpy: bool = True) -> list[tuple[str, float]]:
    """RSS after each step of an agent's start, measured in a fresh interpreter with the
    systemd unit's environment, as the agent runs (its malloc settings)."""
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("memory_steps.py")),
                          str(VEHICLE_DBC), *([] if with_numpy else ["--without-numpy"])],
                         check=True,
                         capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, **unit_environment(),
                              "PYTHONPATH": str(REPO)}).stdout
    return [(name, mb) for name, mb in json.loads(out)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.bench.memory",
                                     description="the long memory soak (docs/performance.md)")
    parser.add_argument("--vehicle-hours", type=float, default=24.0)
    parser.add_argument("--wall-limit", type=float, default=1200.0,
                        help="stop after this many seconds of wall time whatever was covered")
    parser.add_argument("--frame-every", type=float, default=1.0,
                        help="thin the drive to one frame per message (and page) this often, "
                             "in s (under the plan's stale_after, 10 s, every signal is still "
                             "sampled every second)")
    args = parser.parse_args(argv)
    print(json.dumps(long_soak(args.vehicle_hours, args.wall_limit, args.frame_every),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
