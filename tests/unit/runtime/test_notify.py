import contextlib
import os
import socket
import time

import pytest

from agent.runtime.notify import Notifier
from agent.runtime.watchdog import Liveness, WatchdogFeeder


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(2)
    yield str(path), server
    server.close()


def test_messages_reach_the_notify_socket(notify_socket):
    path, server = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("sampling 3 signals")
    assert server.recv(4096) == b"READY=1\nSTATUS=sampling 3 signals"
    notifier.stopping()
    assert server.recv(4096).startswith(b"STOPPING=1")


def test_abstract_socket_names_start_with_at():
    name = f"edge-agent-test-{os.getpid()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).watchdog()
        assert server.recv(100) == b"WATCHDOG=1"
    finally:
        server.close()


def test_without_systemd_nothing_happens():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("x")


@pytest.mark.parametrize("environ, interval", [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_the_usec_and_only_for_this_pid(environ, interval):
    assert Notifier(environ).watchdog_interval == interval


def test_feeder_pings_only_while_every_loop_beats(notify_socket):
    path, server = notify_socket
    server.settimeout(0.05)
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
    liveness = Liveness()
    feeder = WatchdogFeeder(notifier, liveness)

    def pings(seconds):
        count = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            liveness.beat("healthy", 0.2)
            feeder.tick()
            with contextlib.suppress(TimeoutError):
                count += server.recv(100) == b"WATCHDOG=1"
        return count

    liveness.beat("sampler", 0.3)
    assert pings(0.25) >= 3
    assert liveness.overdue() == []
    time.sleep(0.1)                      # the sampler stops beating
    assert liveness.overdue() == ["sampler"]
    assert pings(0.3) == 0
    liveness.retire("sampler")
    assert pings(0.2) >= 2
