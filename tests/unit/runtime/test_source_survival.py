"""A source whose own code raises is restarted with back-off, counted and shown in `diag`,
never left dead (issue #20: one bad gpsd line used to end the GPS source for good)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config.schema import load_config
from agent.runtime import status
from agent.runtime.daemon import Agent, build_agent
from agent.sources.gpsd import GpsdSource
from agent.sources.gpsd_json import parse_report
from agent.wire.keys import generate_key_pair
from tests.helpers.support import wait_until

FIX = json.dumps({"class": "TPV", "mode": 3, "lat": 48.1, "lon": 11.5, "altMSL": 519.4,
                  "speed": 0.0, "track": 0.0}).encode() + b"\n"
# What the stand-in bug below chokes on: any line the parser cannot cope with.
POISON = b'{"class":"TPV","poison":true}\n'


@pytest.fixture(autouse=True)
def _no_broker(caplog, monkeypatch):
    """No broker listens here: stopping does not wait to deliver, and the uplink's connection
    errors are not what these tests read."""
    monkeypatch.setattr("agent.runtime.daemon.SHUTDOWN_DELIVERY_TIMEOUT", 0.1)
    caplog.set_level(logging.CRITICAL, logger="agent.output.uplink")


class FakeGpsd:
    """A TCP server speaking enough of gpsd: each connection gets a VERSION banner, the lines
    scripted for it (connection 0 first), then a 3D fix every 50 ms until it is closed."""

    def __init__(self, scripts: list[list[bytes]]) -> None:
        self.scripts = scripts
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            index, self.connections = self.connections, self.connections + 1
            script = self.scripts[index] if index < len(self.scripts) else []
            threading.Thread(target=self._talk, args=(connection, script), daemon=True).start()

    def _talk(self, connection: socket.socket, script: list[bytes]) -> None:
        with connection, contextlib.suppress(OSError):
            connection.sendall(b'{"class":"VERSION","release":"3.22"}\n' + b"".join(script))
            while not self._closing.wait(0.05):
                connection.sendall(FIX)

    def close(self) -> None:
        self._closing.set()
        self._listener.close()


def write_config(directory: Path, gpsd_port: int) -> Path:
    key = directory / "vehicle.key"
    generate_key_pair(key)
    config = directory / "agent.toml"
    config.write_text(f"""
[vehicle]
id = "gps-0001"

[[sources]]
name = "gps"
type = "gpsd"
host = "127.0.0.1"
port = {gpsd_port}

[[sampling.signals]]
match = "gps.*"

[batch]
window = 5.0

[keys]
signing_key = "{key}"

[uplink]
host = "127.0.0.1"
port = 9
tls = false

[control]
socket = "{directory / 'control.sock'}"

[state]
directory = "{directory / 'state'}"
""", encoding="utf-8")
    return config


@contextlib.contextmanager
def running_agent(directory: Path, gpsd: FakeGpsd) -> Iterator[Agent]:
    """The agent started and stopped as the daemon does (no broker: its batches stay)."""
    agent = build_agent(load_config(write_config(directory, gpsd.port)))
    agent.start()
    try:
        yield agent
    finally:
        agent.stop()
        gpsd.close()


def poisoned(line: bytes):
    """parse_report with a bug: it raises on POISON, as any unforeseen input might."""
    if line + b"\n" == POISON:
        raise OverflowError("int too large to convert to float")
    return parse_report(line)


def test_a_source_that_raises_is_restarted_counted_and_shown(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr("agent.sources.gpsd.parse_report", poisoned)
    monkeypatch.setattr(Agent, "SOURCE_RESTART_FIRST", 0.05)
    gpsd = FakeGpsd([[POISON], [FIX, POISON]])  # fails twice, then delivers fixes
    with caplog.at_level(logging.ERROR), running_agent(tmp_path, gpsd) as agent:
        health = agent.parts.healths["gps"]
        assert wait_until(lambda: health.failures == 2 and gpsd.connections >= 3, timeout=20), \
            (health, gpsd.connections)
        def gps_document() -> dict:
            return status.gps(agent.snapshot(), agent.readings())

        assert wait_until(lambda: gps_document()["sources"][0]["readings"]
                          .get("lat", {}).get("value") == 48.1, timeout=20)
        gps = gps_document()
        source = gps["sources"][0]
        assert source["connected"] == 1 and source["failures"] == 2
        assert source["last_failure"] == "OverflowError: int too large to convert to float"
        warning = (f"gpsd gps (127.0.0.1:{gpsd.port}): failed 2 times with an unexpected "
                   "error and was restarted (last: OverflowError: int too large to convert "
                   "to float)")
        assert any(w.startswith(warning) for w in gps["warnings"]), gps["warnings"]
        assert any(w.startswith(warning) for w in status.status(agent.snapshot())["warnings"])
        assert agent.parts.health.of(["gps"])["gps.failures"] == 2
    logged = [r for r in caplog.records if r.getMessage().startswith("source gps failed")]
    assert len(logged) == 1 and logged[0].exc_info is not None  # once per kind, with traceback
    assert "stopped unexpectedly" not in caplog.text


def test_restarts_back_off_to_a_bound_and_each_kind_is_logged_once(tmp_path, monkeypatch,
                                                                     caplog):
    runs: list[float] = []

    def failing(self, on_frames, on_idle, stop):
        runs.append(time.monotonic())
        raise (ValueError if len(runs) % 2 else RuntimeError)(f"stand-in bug {len(runs)}")

    monkeypatch.setattr(GpsdSource, "run", failing)
    monkeypatch.setattr(Agent, "SOURCE_RESTART_FIRST", 0.05)
    monkeypatch.setattr(Agent, "SOURCE_RESTART_LONGEST", 0.2)
    with caplog.at_level(logging.ERROR), running_agent(tmp_path, FakeGpsd([])) as agent:
        assert wait_until(lambda: len(runs) >= 6, timeout=20)
        health = agent.parts.healths["gps"]
        assert wait_until(lambda: health.failures >= 6)
        assert health.last_failure.startswith(("ValueError: stand-in bug",
                                               "RuntimeError: stand-in bug"))
    gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
    # Waits never come out shorter than the back-off (a busy machine makes them longer).
    assert all(gap >= wait * 0.99 for gap, wait in
               zip(gaps, (0.05, 0.1, 0.2, 0.2, 0.2), strict=False)), gaps
    logged = [r.getMessage().split(";")[0] for r in caplog.records
              if r.getMessage().startswith("source gps failed")]
    assert logged == ["source gps failed (ValueError)", "source gps failed (RuntimeError)"]


def test_stopping_ends_a_restart_wait_at_once(tmp_path, monkeypatch):
    runs: list[float] = []

    def failing(self, on_frames, on_idle, stop):
        runs.append(time.monotonic())
        raise RuntimeError("stand-in bug")

    monkeypatch.setattr(GpsdSource, "run", failing)
    monkeypatch.setattr(Agent, "SOURCE_RESTART_FIRST", 60.0)
    gpsd = FakeGpsd([])
    agent = build_agent(load_config(write_config(tmp_path, gpsd.port)))
    agent.start()
    try:
        assert wait_until(lambda: runs, timeout=20)  # failed: now in its 60 s wait
    finally:
        stopping = threading.Thread(target=agent.stop)
        stopping.start()
        started = time.monotonic()
        gone = wait_until(lambda: not [t for t in threading.enumerate()
                                       if t.name == "source-gps"], timeout=10)
        waited = time.monotonic() - started
        stopping.join(timeout=30)
        gpsd.close()
    assert gone and waited < 2.0, waited
    assert len(runs) == 1


def test_diag_status_words_a_stale_gps_source(tmp_path):
    """`diag status` shares the value sources' warnings with `diag gps`: a connected but
    stale gpsd made it fail with KeyError 'stale_after_s' (seen on a loaded host, where the
    fixes came late), so the technician got an error instead of the warning."""
    gpsd = FakeGpsd([])
    agent = build_agent(load_config(write_config(tmp_path, gpsd.port)))
    try:
        agent.parts.healths["gps"].state.update(connected=1, stale=1)  # not started: nothing moves
        warnings = status.status(agent.snapshot())["warnings"]
        assert any("no valid data for more than 10 s" in warning for warning in warnings), \
            warnings
    finally:
        agent.parts.spool.close()
        gpsd.close()
