"""agent/output/uplink.py without a broker: back-off, topics, the TLS files it insists on,
and the snapshot it gives diagnostics (tests/integration/test_uplink_link.py has the broker)."""

from __future__ import annotations

import itertools
import random

import pytest

from agent.config.schema import UplinkConfig
from agent.errors import KeyFileError
from agent.output.spool import Spool
from agent.output.uplink import Uplink, backoff_delays, topic


def test_back_off_doubles_up_to_its_cap_with_jitter_below_each_step():
    delays = list(itertools.islice(backoff_delays(1.0, 8.0, random.Random(7)), 7))
    steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0, 8.0]

    assert all(step / 2 <= delay <= step for delay, step in zip(delays, steps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered: vehicles that lost one broker spread out


def test_topics_are_prefix_vehicle_leaf():
    assert topic("fleet", "demo-0001", "telemetry") == "fleet/demo-0001/telemetry"


@pytest.fixture
def spool(tmp_path):
    opened = Spool(tmp_path / "spool.sqlite", 2**20)
    yield opened
    opened.close()


def test_tls_without_its_files_is_refused_naming_the_key(spool, tmp_path):
    config = UplinkConfig(tls=True, ca_cert=tmp_path / "ca.crt", cert=tmp_path / "v.crt",
                          key=tmp_path / "v.key")

    with pytest.raises(KeyFileError, match=r"\[uplink\] ca_cert: file .*ca.crt not found"):
        Uplink(config, "v1", bytes(16), spool)


def test_a_new_uplink_reports_nothing_sent_and_not_connected(spool):
    uplink = Uplink(UplinkConfig(tls=False, prefix="p"), "v1", bytes(16), spool)
    stats = uplink.stats()

    assert not stats.connected and stats.last_puback == 0.0
    assert stats.counters() == {"published": 0, "acked": 0, "dropped": 0, "connects": 0,
                                "connect_failures": 0, "refused": 0}
    assert uplink.topic_for("config/ack") == "p/v1/config/ack"
    assert uplink.reconnect().startswith("not connected")
