"""free_port: the loopback ports the demo and the tests start their servers on."""

from __future__ import annotations

import socket

from devkit import broker
from devkit.broker import free_port


def first_ephemeral() -> int:
    return int(broker.EPHEMERAL_RANGE.read_text().split()[0])


def test_ports_come_from_below_the_ephemeral_range_and_can_be_bound():
    ports = {free_port() for _ in range(20)}
    assert len(ports) > 1  # drawn at random, not one fixed port
    assert all(broker.LOWEST_PORT <= port < first_ephemeral() for port in ports)
    with socket.socket() as server:
        server.bind(("127.0.0.1", ports.pop()))
        server.listen()


def test_without_room_below_the_range_the_kernel_chooses(tmp_path, monkeypatch):
    kernels_range = first_ephemeral()
    no_room = tmp_path / "ip_local_port_range"
    no_room.write_text(f"{broker.LOWEST_PORT}\t60999\n")
    monkeypatch.setattr(broker, "EPHEMERAL_RANGE", no_room)
    assert free_port() >= kernels_range
