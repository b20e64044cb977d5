"""A backend-side MQTT subscriber for integration tests."""

from __future__ import annotations

import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class Capture:
    """Subscribes to `topic` with a persistent session, so what is published while the broker
    restarts is queued for it; keeps (topic, payload) in arrival order."""

    def __init__(self, port: int, tls, topic: str = "fleet/#") -> None:
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
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
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

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
