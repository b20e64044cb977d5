"""`tools/backend dictionaries prune` against a real Mosquitto (mutual TLS): the retained
dictionary that no batch has needed for long is cleared, the current one stays."""

import argparse
import json
import queue

import paho.mqtt.client as mqtt
from fleet.backend import main
from fleet.prune import read_retained
from paho.mqtt.enums import CallbackAPIVersion

from tests.unit.fleet.test_prune import stored


def publish_retained(port, tls, topics):
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(tls.ca_cert), certfile=str(tls.cert), keyfile=str(tls.key))
    connected = queue.Queue()
    client.on_connect = lambda c, u, f, reason, p: connected.put(reason)
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert not connected.get(timeout=15).is_failure
    for info in [client.publish(topic, b"signed dictionary", qos=1, retain=True)
                 for topic in topics]:
        info.wait_for_publish(timeout=15)
        assert info.is_published()
    client.disconnect()
    client.loop_stop()


def test_prune_clears_only_what_no_batch_needs(tmp_path, mosquitto, dev_pki):
    stored(tmp_path / "dataset", ("v1", "aa" * 8, 40), ("v1", "bb" * 8, 0.1))
    old, current = (f"fleet/v1/dictionary/{did * 8}" for did in ("aa", "bb"))
    unknown = "fleet/v2/dictionary/" + "cc" * 8
    publish_retained(mosquitto.port, dev_pki.client("fleet-sim"), [old, current, unknown])
    tls = dev_pki.client("backend")
    options = ["--dataset", str(tmp_path / "dataset"), "--host", "127.0.0.1", "--port",
               str(mosquitto.port), "--ca-cert", str(tls.ca_cert), "--cert", str(tls.cert),
               "--key", str(tls.key), "--older-than", "30", "--settle", "1", "--json"]
    args = argparse.Namespace(host="127.0.0.1", port=mosquitto.port, plaintext=False,
                              ca_cert=tls.ca_cert, cert=tls.cert, key=tls.key, prefix="fleet",
                              settle=1.0)
    assert main(["dictionaries", "prune", *options, "--dry-run"]) == 0
    assert {r.topic for r in read_retained(args)} == {old, current, unknown}
    assert main(["dictionaries", "prune", *options]) == 0
    assert {r.topic for r in read_retained(args)} == {current, unknown}


def test_prune_says_what_it_cleared(tmp_path, mosquitto, dev_pki, capsys):
    stored(tmp_path / "dataset", ("v1", "aa" * 8, 40), ("v1", "bb" * 8, 0.1))
    old = "fleet/v1/dictionary/" + "aa" * 8
    publish_retained(mosquitto.port, dev_pki.client("fleet-sim"), [old])
    tls = dev_pki.client("backend")
    assert main(["dictionaries", "prune", "--dataset", str(tmp_path / "dataset"), "--host",
                 "127.0.0.1", "--port", str(mosquitto.port), "--ca-cert", str(tls.ca_cert),
                 "--cert", str(tls.cert), "--key", str(tls.key), "--settle", "1",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"retained": 1, "cleared": [old]}
