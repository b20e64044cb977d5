"""Config files and processes for running the real agent against a real broker in tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from devkit.pki import TlsFiles

from agent.wire.keys import generate_key_pair

REPO = Path(__file__).resolve().parents[2]
BUNDLED_DBC = REPO / "dbc" / "vehicle.dbc"
# What the events engine finds on the bundled drive (trip, a stop at a shop, the loaded trunk).
BUNDLED_EVENTS = ["trip_start", "stop", "load_change", "trip_end"]
BUNDLED_DRIVE = REPO / "dbc" / "drive.log.gz"


def write_agent_config(directory: Path, *, port: int, tls: TlsFiles, vehicle: str = "demo-0001",
                       log: Path = BUNDLED_DRIVE, dbc: Path = BUNDLED_DBC, window: float = 60.0,
                       speed: float = 0.0, extra: str = "") -> Path:
    """An agent config replaying `log` as fast as possible with its recorded timestamps."""
    key = directory / "vehicle.key"
    if not key.exists():
        generate_key_pair(key)
    config = directory / "agent.toml"
    config.write_text(f"""
[vehicle]
id = "{vehicle}"

[[sources]]
name = "can0"
type = "replay"
path = "{log}"
dbc = ["{dbc}"]
speed = {speed}
rebase = false

[[sampling.signals]]
match = "can0.*"

[[sampling.signals]]
match = "can0.ESP_VehicleSpeed.VehicleSpeed"
mode = "stats"

[batch]
window = {window}

[keys]
signing_key = "{key}"

[uplink]
host = "127.0.0.1"
port = {port}
ca_cert = "{tls.ca_cert}"
cert = "{tls.cert}"
key = "{tls.key}"
{extra}
""", encoding="utf-8")
    return config


def on_virtual_bus(config: Path, channel: str) -> Path:
    """`config` (from write_agent_config) with its replay source swapped for `can0` on the
    python-can virtual bus `channel`, where simulated ECUs answer (devkit.ecu_sim), sampling
    the diagnostics' signals; the file rewritten in place."""
    text = config.read_text()
    replay = text[text.index("[[sources]]"):text.index("[[sampling.signals]]")]
    virtual_bus = (f'[[sources]]\nname = "can0"\ntype = "virtual"\nchannel = "{channel}"\n'
                   f'dbc = ["{BUNDLED_DBC}"]\n\n'
                   '[[sampling.signals]]\nmatch = "can0.diag.*"\n\n')
    config.write_text(text.replace(replay, virtual_bus))
    return config


def run_agent(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def start_backend(port: int, tls: TlsFiles, keys: Path | str, *args: str,
                  ready_timeout: float = 60) -> subprocess.Popen:
    """The backend, returned once the broker acknowledged its subscriptions (it logs
    "subscribed to" then), so that whatever a test publishes next reaches it."""
    backend = subprocess.Popen(
        [sys.executable, "-m", "fleet.backend", "--host", "127.0.0.1", "--port", str(port),
         "--ca-cert", str(tls.ca_cert), "--cert", str(tls.cert), "--key", str(tls.key),
         "--keys", str(keys), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    assert backend.stderr is not None
    # A backend that never says it is ready is killed, which ends the readline below.
    watchdog = threading.Timer(ready_timeout, backend.kill)
    watchdog.start()
    before = []
    try:
        while "subscribed to" not in (line := backend.stderr.readline()):
            if not line:
                raise AssertionError("the backend ended (or hung) before it subscribed:\n"
                                     + "".join(before)[-3000:])
            before.append(line)
    finally:
        watchdog.cancel()
    return backend


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}
