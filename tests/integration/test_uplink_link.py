"""The uplink against a real broker when the link stalls and drops with batches in flight."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from devkit.broker import MosquittoBroker

from agent.config.schema import UplinkConfig
from agent.output.spool import Spool
from agent.output.uplink import Uplink
from tests.helpers.capture import Capture
from tests.helpers.link_proxy import LinkProxy
from tests.helpers.support import require_mosquitto, wait_until

VEHICLE = "demo-0001"
BOOT = bytes(16)
ENVELOPE_BYTES = 1000


def envelope(seq: int) -> bytes:
    return f"batch {seq:04d} ".encode().ljust(ENVELOPE_BYTES, b".")


def seq_of(payload: bytes) -> int:
    return int(payload.split()[1])


def uplink_config(broker: MosquittoBroker, tls) -> UplinkConfig:
    return UplinkConfig(host=broker.host, port=broker.port, ca_cert=tls.ca_cert, cert=tls.cert,
                        key=tls.key, reconnect_min=0.2, reconnect_max=0.5, drain_rate=0)


def test_batches_in_flight_when_the_link_drops_arrive_and_are_not_counted_lost(
        tmp_path, mosquitto, dev_pki, caplog):
    """paho keeps what awaits a PUBACK and publishes it again after the reconnect, so a batch
    evicted from the full spool while in flight still arrives: lost and counted are only the
    batches evicted before they were sent."""
    tls = dev_pki.client(VEHICLE)
    config = uplink_config(mosquitto, tls)
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=5 * ENVELOPE_BYTES,
                  reserve_bytes=4096)
    capture = Capture(mosquitto.port, dev_pki.client("backend"), f"fleet/{VEHICLE}/telemetry")
    uplink = Uplink(config, VEHICLE, BOOT, spool)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.health.connected, 10)
        mosquitto.pause()
        try:
            for seq in range(5):
                uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
            assert wait_until(lambda: uplink.health.published == 5, 10)
            uplink.reconnect()  # the link drops with five batches awaiting their PUBACK
            assert wait_until(lambda: not uplink.health.connected, 10)
            for seq in range(5, 10):  # a full spool: batch 0 (in flight), then 5-8 make room
                uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
            assert [b.seq for b in spool.next_batches(20)] == [1, 2, 3, 4, 9]
        finally:
            mosquitto.resume()
        assert wait_until(lambda: uplink.health.connects >= 2 and spool.stats().depth == 0, 30)
        expected = {envelope(seq) for seq in (0, 1, 2, 3, 4, 9)}
        assert wait_until(lambda: set(capture.envelopes) == expected, 10), capture.envelopes
        assert spool.stats().evicted == 4  # 5-8, never sent; 0 arrived from paho's copy
        assert uplink.health.acked == 6, uplink.health
        # One drop, reported once, and not as a broker refusing this vehicle.
        assert "closed the connection before accepting it" not in caplog.text
        assert caplog.text.count("uplink: disconnected") == 1, caplog.text
    finally:
        uplink.stop(timeout=2)
        capture.close()
        spool.close()


class LateResends(Uplink):
    """An uplink whose network thread, after on_connect and before paho re-sends what awaited a
    PUBACK (both happen in paho's handling of the CONNACK), waits until the worker has had its
    turn: it published a batch, or went round its loop twice. A loaded machine can schedule
    the two threads so; here it happens every time."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.turns = 0
        super().__init__(*args, beat=self._turn, **kwargs)

    def _turn(self) -> None:
        self.turns += 1

    def _on_connect(self, *args: Any) -> None:
        super()._on_connect(*args)
        published, turns = self.health.published, self.turns
        wait_until(lambda: self.health.published > published or self.turns >= turns + 2)


@pytest.mark.parametrize("drain_rate", [0, 20])
def test_a_batch_unacknowledged_when_the_link_drops_goes_again_before_any_newer_one(
        tmp_path, mosquitto, dev_pki, drain_rate):
    """Batch 3 is sent but never reaches the broker, the link drops, 4-9 are spooled during the
    outage. After the reconnect paho sends 3 again (DUP) and the backlog follows: the broker
    sees one increasing sequence, with or without a drain rate."""
    tls = dev_pki.client(VEHICLE)
    spool = Spool(tmp_path / "spool.sqlite", max_bytes=1 << 20, reserve_bytes=4096)
    capture = Capture(mosquitto.port, dev_pki.client("backend"), f"fleet/{VEHICLE}/telemetry")
    link = LinkProxy(mosquitto.port)
    config = replace(uplink_config(mosquitto, tls), port=link.port, drain_rate=drain_rate)
    uplink = LateResends(config, VEHICLE, BOOT, spool)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.health.connected, 10)
        for seq in range(3):
            uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
        assert wait_until(lambda: uplink.health.acked == 3, 10), uplink.health
        link.hold()
        uplink.submit(spool.put("telemetry", BOOT, 3, envelope(3)))
        assert wait_until(lambda: link.held >= ENVELOPE_BYTES, 10)  # sent, never to arrive
        link.cut()
        assert wait_until(lambda: not uplink.health.connected, 10)
        for seq in range(4, 10):
            uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
        link.restore()
        assert wait_until(lambda: uplink.health.connects >= 2 and spool.stats().depth == 0, 30)
        assert wait_until(lambda: capture.count() >= 10, 10), capture.envelopes
        assert [seq_of(payload) for payload in capture.envelopes] == list(range(10))
        assert uplink.health.acked == 10 and spool.stats().evicted == 0
    finally:
        uplink.stop(timeout=2)
        link.close()
        capture.close()
        spool.close()


# Each vehicle publishes under its own certificate's name only, as a fleet broker would have it.
FLEET_ACL = "pattern readwrite fleet/%u/#\nuser backend\ntopic read fleet/#\n"


def test_a_batch_the_broker_refuses_stays_spooled_and_goes_once_the_acl_allows_it(
        tmp_path, dev_pki, caplog):
    """Mosquitto answers a publish its ACL denies with PUBACK "Not authorized" (MQTT v5).
    That is no delivery: the batches stay on disk, counted, until the ACL is fixed."""
    require_mosquitto()
    tls = dev_pki.client("demo-0001")
    with MosquittoBroker(tmp_path / "broker", dev_pki, acl=FLEET_ACL) as broker:
        spool = Spool(tmp_path / "spool.sqlite", max_bytes=1 << 20, reserve_bytes=4096)
        capture = Capture(broker.port, dev_pki.client("backend"), "fleet/+/telemetry")
        # The certificate says demo-0001, the config says demo-0002: every topic is denied.
        uplink = Uplink(uplink_config(broker, tls), "demo-0002", BOOT, spool)
        uplink.start()
        try:
            for seq in range(3):
                uplink.submit(spool.put("telemetry", BOOT, seq, envelope(seq)))
            assert wait_until(lambda: uplink.health.refused >= 3, 10), uplink.health
            assert spool.stats().depth == 3 and uplink.health.acked == 0
            assert "refused batch 0 on fleet/demo-0002/telemetry (Not authorized)" in caplog.text
            broker.set_acl(FLEET_ACL + "user demo-0001\ntopic readwrite fleet/demo-0002/#\n")
            assert wait_until(lambda: spool.stats().depth == 0, 15), uplink.health
            assert wait_until(lambda: capture.count() >= 3, 5)
            assert capture.envelopes[:3] == [envelope(seq) for seq in range(3)]  # in order
            assert spool.stats().evicted == 0 and uplink.health.acked == 3
        finally:
            uplink.stop(timeout=2)
            capture.close()
            spool.close()


def test_a_broker_refusing_the_connection_is_one_failure_each_time_in_its_own_words(
        tmp_path, caplog):
    """A CONNACK refusal makes paho report the connection's end too: counted and said once,
    with the broker's reason, not as a certificate problem."""
    require_mosquitto()
    with MosquittoBroker(tmp_path / "broker", None, anonymous=False) as broker:
        config = UplinkConfig(host=broker.host, port=broker.port, tls=False,
                              reconnect_min=0.1, reconnect_max=0.2)
        spool = Spool(tmp_path / "spool.sqlite", max_bytes=1 << 20, reserve_bytes=4096)
        uplink = Uplink(config, VEHICLE, BOOT, spool)
        uplink.start()
        try:
            assert wait_until(lambda: uplink.health.connect_failures >= 3, 10)
        finally:
            uplink.stop(timeout=1)
            spool.close()
    said = caplog.text.count("uplink: cannot connect to")
    assert uplink.health.connects == 0 and said == uplink.health.connect_failures
    assert "Not authorized" in caplog.text
    assert "closed the connection before accepting it" not in caplog.text
