"""Figure 6: start-up to READY=1 with the bundled 931-signal DBC.

`python -m agent run` is spawned with NOTIFY_SOCKET pointing at our datagram socket (as
systemd does) and timed from spawn to the READY=1 datagram, then stopped with SIGTERM. The
first start in a fresh state directory is "cold" (no parsed-DBC cache yet: cantools parses the
DBC and the agent keeps its tables in the state folder, agent/decoding/cache.py); the figure
is the median of the following "warm" starts, a restart's case. Same-run baseline: a fresh
interpreter that imports cantools and parses the same DBC, nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devkit.bench.common import DRIVE_LOG, REPO, VEHICLE_DBC, Figure, median

TARGET_S = 1.0  # issue #26


def run(quick: bool) -> Figure:
    repeats = 3 if quick else 7
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        config = write_config(Path(scratch))
        times = [time_to_ready(config, Path(scratch)) for _ in range(repeats + 1)]
    cold, warm = times[0], median(times[1:])
    baseline = median([_parse_only() for _ in range(max(2, repeats // 2))])
    return Figure(
        key="startup_s", title="Start-up to READY=1 (931-signal DBC)", unit="s",
        value=round(warm, 3), baseline=round(baseline, 3),
        baseline_name="python + import cantools + parse the DBC", ratio=round(
            baseline / warm, 2), target=f"≤ {TARGET_S:g} s", met=warm <= TARGET_S,
        runs=repeats, details={"cold_start_s": round(cold, 3)})


def write_config(directory: Path, *, speed: float = 1.0, loop: bool = True,
                 memory_mb: float | None = None, port: int = 9) -> Path:
    """A replaying agent config in `directory` (uplink on `port`: by default nobody listens)."""
    from agent.wire.keys import generate_key_pair

    key = directory / "vehicle.key"
    if not key.exists():
        generate_key_pair(key)
    ring = f"[ring]\nmemory_mb = {memory_mb}\n" if memory_mb is not None else ""
    config = directory / "agent.toml"
    config.write_text(f"""
[vehicle]
id = "bench-0001"
[[sources]]
name = "can0"
type = "replay"
path = "{DRIVE_LOG}"
dbc = ["{VEHICLE_DBC}"]
speed = {speed}
loop = {str(loop).lower()}
[[sampling.signals]]
match = "can0.*"
[[sampling.signals]]
match = "can0.ESP_VehicleSpeed.VehicleSpeed"
mode = "stats"
{ring}
[keys]
signing_key = "{key}"
[state]
directory = "{directory / 'state'}"
[uplink]
host = "127.0.0.1"
port = {port}
tls = false
[ota]
enabled = false
""", encoding="utf-8")
    return config


def unit_environment() -> dict[str, str]:
    """The Environment= settings of the shipped systemd unit: the agent as installed runs so."""
    settings = {}
    for line in (REPO / "systemd" / "edge-agent.service").read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            settings[name] = value
    return settings


def spawn(config: Path, notify_path: Path | None = None,
          log: Path | None = None) -> subprocess.Popen[bytes]:
    """`python -m agent run` with the environment the systemd unit gives it."""
    env = {**os.environ, **unit_environment(), "PYTHONPATH": str(REPO)}
    if notify_path is not None:
        env["NOTIFY_SOCKET"] = str(notify_path)
    stderr = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    finally:
        if log is not None:
            stderr.close()


def time_to_ready(config: Path, scratch: Path, timeout: float = 60.0) -> float:
    notify_path = scratch / f"notify-{time.monotonic_ns()}.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(0.05)
        started = time.perf_counter()
        log = scratch / "agent-startup.log"
        process = spawn(config, notify_path, log=log)
        try:
            while True:
                try:
                    if notify.recv(4096).startswith(b"READY=1"):
                        return time.perf_counter() - started
                except TimeoutError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"the agent exited with {process.returncode} before "
                                       f"READY=1:\n{log_tail(log)}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"no READY=1 within {timeout:g} s")
        finally:
            process.kill()  # how it stops is not timed; the spool survives a SIGKILL
            process.wait()
            notify_path.unlink(missing_ok=True)


def log_tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _parse_only() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import sys, cantools; "
                    "cantools.database.load_file(sys.argv[1])", str(VEHICLE_DBC)], check=True)
    return time.perf_counter() - started
