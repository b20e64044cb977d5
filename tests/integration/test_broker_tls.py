"""The test broker itself: mutual TLS is enforced, and restart keeps the port."""

from __future__ import annotations

import queue
import ssl

import paho.mqtt.client as mqtt
import pytest
from devkit.pki import make_dev_pki
from paho.mqtt.enums import CallbackAPIVersion


def connect(broker, tls=None, *, ca=None):
    answers: queue.Queue = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if tls is not None or ca is not None:
        client.tls_set(ca_certs=str(ca or tls.ca_cert),
                       certfile=str(tls.cert) if tls else None,
                       keyfile=str(tls.key) if tls else None)
    client.on_connect = lambda c, u, f, reason, p: answers.put(str(reason))
    client.on_message = lambda c, u, message: answers.put(message.payload)
    try:
        client.connect(broker.host, broker.port)
    except (ssl.SSLError, OSError) as exc:
        return client, f"refused: {exc}", answers
    client.loop_start()
    try:
        verdict = answers.get(timeout=5)
    except queue.Empty:
        verdict = "no answer"
    return client, verdict, answers


def test_a_client_with_a_ca_signed_certificate_round_trips_qos1(mosquitto, dev_pki):
    client, verdict, answers = connect(mosquitto, dev_pki.client("vehicle-1"))
    assert verdict == "Success"
    client.subscribe("t/#", qos=1)
    client.publish("t/x", b"hello", qos=1).wait_for_publish(5)
    assert answers.get(timeout=5) in (b"hello", "Success")
    client.loop_stop()


@pytest.mark.parametrize("who", ["no certificate", "foreign CA"])
def test_clients_without_a_trusted_certificate_are_refused(mosquitto, dev_pki, tmp_path, who):
    tls = make_dev_pki(tmp_path / "other").client("intruder") if who == "foreign CA" else None
    client, verdict, _ = connect(mosquitto, tls, ca=dev_pki.ca_cert)
    client.loop_stop()
    assert verdict != "Success"


def test_restart_keeps_the_port(mosquitto, dev_pki):
    port = mosquitto.port
    mosquitto.restart()
    assert mosquitto.port == port
    client, verdict, _ = connect(mosquitto, dev_pki.client("vehicle-1"))
    assert verdict == "Success"
    client.loop_stop()
