"""A backend-side MQTT client for integration tests: mutual TLS, subscribed before it is
returned, collecting what arrives and publishing as the backend would."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence

import paho.mqtt.client as mqtt
from devkit.pki import TlsFiles
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.helpers.support import wait_until


class Capture:
    """Subscribes to `topics` (one filter or several, QoS 1) with a persistent session, so what
    is published while the broker restarts is queued for it; keeps (topic, payload) in arrival
    order."""

    def __init__(self, port: int, tls: TlsFiles, topics: str | Sequence[str] = "fleet/#") -> None:
        filters = [(topic, 1) for topic in ([topics] if isinstance(topics, str) else topics)]
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  # Never id(self): a later capture at a reused address
                                  # resumed the earlier one's session and got its queue.
                                  client_id=f"capture-{uuid.uuid4().hex}")
        self.client.tls_set(ca_certs=str(tls.ca_cert), certfile=str(tls.cert),
                            keyfile=str(tls.key))
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(filters)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.reconnect_delay_set(0.2, 1)
        session = Properties(PacketTypes.CONNECT)
        session.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=session)
        self.client.loop_start()
        assert self._subscribed.wait(30), "the capture could not subscribe"

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    @property
    def envelopes(self) -> list[bytes]:
        with self._lock:
            return [payload for _, payload in self.messages]

    def payloads(self, topic: str) -> list[bytes]:
        """What arrived on the topics that the filter `topic` matches, in arrival order."""
        with self._lock:
            return [payload for name, payload in self.messages
                    if mqtt.topic_matches_sub(topic, name)]

    def count(self, topic: str | None = None) -> int:
        """How many messages arrived (on `topic`, a filter, when it is given)."""
        if topic is not None:
            return len(self.payloads(topic))
        with self._lock:
            return len(self.messages)

    def wait_for(self, topic: str, index: int, timeout: float = 40) -> bytes:
        """The payload number `index` (from 0) on `topic`, once it has arrived."""
        assert wait_until(lambda: self.count(topic) > index, timeout), \
            f"nothing on {topic} after {index}"
        return self.payloads(topic)[index]

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
