"""A TCP relay between a vehicle and its broker that can lose the link the way a cellular one
does: what the vehicle sent last never reaches the broker, then the connection is gone."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

CHUNK = 65536


class LinkProxy:
    """Relays connections on a free loopback port to `port`. `hold()` swallows what the
    vehicle sends from then on (counted in `held`); `cut()` closes every relayed connection
    and turns new ones away until `restore()`."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._target = (host, port)
        self._listener = socket.create_server((host, 0))
        self.host = host
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._holding = False
        self._held = 0
        self._down = False
        self._accepter = threading.Thread(target=self._accept, name="link-proxy", daemon=True)
        self._accepter.start()

    def __enter__(self) -> LinkProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    @property
    def held(self) -> int:
        """Bytes the vehicle sent since `hold()` that the broker will never see."""
        with self._lock:
            return self._held

    def hold(self) -> None:
        with self._lock:
            self._holding, self._held = True, 0

    def cut(self) -> None:
        with self._lock:
            doomed, self._sockets = self._sockets, []
            self._holding, self._down = False, True
        for sock in doomed:
            _close(sock)

    def restore(self) -> None:
        with self._lock:
            self._down = False

    def close(self) -> None:
        _close(self._listener)
        self.cut()
        self._accepter.join(5)

    def _accept(self) -> None:
        while True:
            try:
                vehicle, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                broker = socket.create_connection(self._target, timeout=5)
            except OSError:
                _close(vehicle)
                continue
            broker.settimeout(None)
            with self._lock:
                down = self._down
                if not down:
                    self._sockets += [vehicle, broker]
            if down:
                _close(vehicle)
                _close(broker)
                continue
            threading.Thread(target=self._relay, args=(vehicle, broker, True),
                             daemon=True).start()
            threading.Thread(target=self._relay, args=(broker, vehicle, False),
                             daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        while True:
            try:
                data = source.recv(CHUNK)
            except OSError:
                data = b""
            if not data:
                _close(sink)
                return
            with self._lock:
                swallow = upstream and self._holding
                if swallow:
                    self._held += len(data)
            if swallow:
                continue
            try:
                sink.sendall(data)
            except OSError:
                _close(source)
                return


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
