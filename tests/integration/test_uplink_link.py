"""The uplink against a real broker when the link stalls and drops with batches in flight."""

from __future__ import annotations

import time

from agent.config import UplinkConfig
from agent.spool import Spool
from agent.uplink import Uplink
from tests.integration.capture import Capture

VEHICLE = "demo-0001"
BOOT = bytes(16)
ENVELOPE_BYTES = 1000


def envelope(seq: int) -> bytes:
    return f"batch {seq:04d} ".encode().ljust(ENVELOPE_BYTES, b".")


def wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_batches_in_flight_when_the_link_drops_arrive_and_are_not_counted_lost(
        tmp_path, mosquitto, dev_pki, caplog):
    """paho keeps what awaits a PUBACK and publishes it again after the reconnect, so a batch
    evicted from the full spool while in flight still arrives: lost and counted are only the
    batches evicted before they were sent."""
    tls = dev_pki.client(VEHICLE)
    config = UplinkConfig(host=mosquitto.host, port=mosquitto.port, ca_cert=tls.ca_cert,
                          cert=tls.cert, key=tls.key, reconnect_min=0.2, reconnect_max=0.5,
                          drain_rate=0)
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=5 * ENVELOPE_BYTES,
                  reserve_bytes=4096)
    capture = Capture(mosquitto.port, dev_pki.client("backend"), f"fleet/{VEHICLE}/telemetry")
    uplink = Uplink(config, VEHICLE, BOOT, spool)
    uplink.start()
    try:
        assert wait_for(lambda: uplink.health.connected, 10)
        mosquitto.pause()
        try:
            for seq in range(5):
                uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
            assert wait_for(lambda: uplink.health.published == 5, 10)
            uplink.reconnect()  # the link drops with five batches awaiting their PUBACK
            assert wait_for(lambda: not uplink.health.connected, 10)
            for seq in range(5, 10):  # a full spool: batch 0 (in flight), then 5-8 make room
                uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
            assert [b.seq for b in spool.next_batches(20)] == [1, 2, 3, 4, 9]
        finally:
            mosquitto.resume()
        assert wait_for(lambda: uplink.health.connects >= 2 and spool.stats().depth == 0, 30)
        expected = {envelope(seq) for seq in (0, 1, 2, 3, 4, 9)}
        assert wait_for(lambda: set(capture.envelopes) == expected, 10), capture.envelopes
        assert spool.stats().evicted == 4  # 5-8, never sent; 0 arrived from paho's copy
        assert uplink.health.acked == 6, uplink.health
        # One drop, reported once, and not as a broker refusing this vehicle.
        assert "closed the connection before accepting it" not in caplog.text
        assert caplog.text.count("uplink: disconnected") == 1, caplog.text
    finally:
        uplink.stop(timeout=2)
        capture.close()
        spool.close()
