"""The interface goes down and up, then is deleted and re-created: the agent reads again."""

from __future__ import annotations

import time

import can

from agent.runtime import status
from tests.vcan.conftest import ip, make_interface, running_agent, wait_for, write_config
from tests.vcan.kinds_dbc import kinds_source, write_kinds_dbc


def send_until_read(agent, gear: int) -> None:
    """Send Engine frames with `gear` until the agent has read one (the bus may still be
    reopening: each try opens a fresh sender, as the old socket died with the interface)."""
    store = agent.stores["can0"]
    frame = can.Message(arbitration_id=0x100, data=bytes([0, 0, gear, 0, 0, 0, 0, 0]),
                        is_extended_id=False)

    def read() -> bool:
        try:
            with can.Bus(interface="socketcan", channel="vcan0",
                         ignore_rx_error_frames=True) as bus:
                bus.send(frame)
        except (can.CanError, OSError):
            return False
        time.sleep(0.3)
        return any(p.signal == "Gear" and value == gear
                   for p, value, _ in store.current_values())

    wait_for(read, f"the agent to read gear {gear} again", timeout=90)


def test_down_up_and_delete_recreate_are_survived_and_reported(tmp_path):
    config = write_config(tmp_path, kinds_source(write_kinds_dbc(tmp_path)))
    with running_agent(config) as agent:
        health = agent.stores["can0"].health
        send_until_read(agent, 1)
        assert health.reconnects == 0

        ip("link", "set", "vcan0", "down")
        wait_for(lambda: health.reconnects >= 1, "the agent to notice vcan0 is down")
        time.sleep(3)
        # Reopening backs off while the interface stays down (it used to spin: a SocketCAN
        # socket binds to a down interface and fails at its first read).
        assert health.reconnects <= 6
        ip("link", "set", "vcan0", "up")
        send_until_read(agent, 2)
        after_down = health.reconnects

        ip("link", "delete", "vcan0")
        wait_for(lambda: health.reconnects > after_down, "the agent to notice vcan0 is gone")
        make_interface("vcan0")
        send_until_read(agent, 3)

        document = status.status(agent.snapshot())
        source = next(s for s in document["sources"] if s["name"] == "can0")
        assert source["reconnects"] == health.reconnects >= 2
        assert any("can0: reopened" in warning for warning in document["warnings"])
        counters = agent.parts.health.of(["can0"])
        assert counters["can0.reconnects"] == health.reconnects
