"""The local control socket: how `edge-agent diag` talks to the running daemon.

A Unix stream socket (never a network port), mode 0660, group from config. Each connection
carries one JSON request line ({"command": ..., "args": {...}}, at most MAX_REQUEST bytes) and
gets one JSON response line. The kernel tells us who the peer is (SO_PEERCRED): read-only
commands are open to root, the service user and members of the diagnostics group;
state-changing ones only to root and the service user.

Each connection being served holds a thread, so a client that connects and sends nothing
must not hold one for long, nor many such clients many: at most MAX_CONNECTIONS are served at
once (one more is told the agent is busy and closed at once, by the accepting thread), and a
request must arrive whole within REQUEST_TIMEOUT seconds of the connection.
"""

from __future__ import annotations

import grp
import json
import logging
import os
import pwd
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
MAX_CONNECTIONS = 16  # `diag` opens one at a time; `diag live` and a bundle a few in a row
REQUEST_TIMEOUT = 5.0  # s to send the request line, and again to take the answer
USAGE = 'send one JSON line: {"command": NAME, "args": {...}}'
Handler = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Command:
    handler: Handler
    changes_state: bool = False


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int


def peer_of(connection: socket.socket) -> Peer:
    data = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", data))


def user_in_group(uid: int, gid: int, group: str) -> bool:
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if gid == entry.gr_gid:
        return True
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return name in entry.gr_mem or pwd.getpwuid(uid).pw_gid == entry.gr_gid


class ControlServer:
    def __init__(self, path: Path, commands: Mapping[str, Command], *, group: str = "",
                 max_connections: int = MAX_CONNECTIONS,
                 request_timeout: float = REQUEST_TIMEOUT) -> None:
        self.path = path
        self._commands = commands
        self._group = group
        self._max_connections = max_connections
        self._timeout = request_timeout
        self._server: _BoundedServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        outer = self

        class _Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve(self.request)

        server = _BoundedServer(str(self.path), _Handler, self._max_connections)
        os.chmod(self.path, 0o660)
        if self._group:
            try:
                os.chown(self.path, -1, grp.getgrnam(self._group).gr_gid)
            except (KeyError, PermissionError) as exc:
                log.warning("control socket: cannot give group %r access (%s); only the "
                            "service user and root can use it", self._group, exc)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="control",
                                        daemon=True)
        self._thread.start()
        log.info("control socket at %s", self.path)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self.path.unlink(missing_ok=True)

    def _serve(self, connection: socket.socket) -> None:
        try:
            line = _read_line(connection, self._timeout)
        except TimeoutError:
            return _reply(connection, self._timeout,
                          error=f"no request within {self._timeout:.0f} s: send one JSON "
                                "line at once")
        except OSError:  # the client went away mid-request
            return None
        if len(line) > MAX_REQUEST:
            return _reply(connection, self._timeout,
                          error=f"request larger than {MAX_REQUEST} bytes")
        parsed = parse_request(line)
        if parsed is None:
            return _reply(connection, self._timeout, error=USAGE)
        name, args = parsed
        command = self._commands.get(name)
        if command is None:
            return _reply(connection, self._timeout,
                          error=f"unknown command {name!r}; known: "
                                f"{', '.join(sorted(self._commands))}")
        peer = peer_of(connection)
        if not self._allowed(peer, command):
            log.warning("control: refused %s from uid %d", name, peer.uid)
            needs = ("root or the service user" if command.changes_state
                     else f"membership of group {self._group!r}")
            return _reply(connection, self._timeout,
                          error=f"permission denied: {name} needs {needs}")
        try:
            result = command.handler(args)
        except Exception as exc:
            log.exception("control: %s failed", name)
            return _reply(connection, self._timeout, error=f"{name} failed: {exc}")
        return _reply(connection, self._timeout, result=result)

    def _allowed(self, peer: Peer, command: Command) -> bool:
        if peer.uid in (0, os.getuid()):
            return True
        if command.changes_state:
            return False
        return bool(self._group) and user_in_group(peer.uid, peer.gid, self._group)


class _BoundedServer(socketserver.ThreadingUnixStreamServer):
    """A thread per connection, at most `limit` at once: the next is answered "busy" by the
    accepting thread itself and closed (its short answer fits any socket buffer)."""

    daemon_threads = True

    def __init__(self, path: str, handler: type[socketserver.BaseRequestHandler],
                 limit: int) -> None:
        self._limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        super().__init__(path, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _reply(request, 0.1, error=f"the agent is serving {self._limit} diagnostics "
                                       "connections already; try again in a moment")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: its slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def _read_line(connection: socket.socket, timeout: float) -> bytes:
    """The request line (up to MAX_REQUEST + 1 bytes, so a longer one is seen as such) read
    within `timeout` s in all: a client sending a byte at a time is cut off like a silent one."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        connection.settimeout(left)
        chunk = connection.recv(MAX_REQUEST + 1 - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data.split(b"\n", 1)[0])


def parse_request(line: bytes) -> tuple[str, dict[str, Any]] | None:
    """The command name and arguments of one request line; None for anything else (bytes
    that are not JSON, nesting too deep for the parser, a document of another shape)."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." a few thousand deep
        return None
    if not isinstance(request, dict):
        return None
    name, args = request.get("command"), request.get("args", {})
    if not isinstance(name, str) or not isinstance(args, dict):
        return None
    return name, args


def _reply(connection: socket.socket, timeout: float, *, result: Any = None,
           error: str | None = None) -> None:
    """Send the one answer; a client that does not take it within `timeout` s is dropped."""
    payload = {"ok": error is None, "result": result} if error is None else {"ok": False,
                                                                             "error": error}
    connection.settimeout(timeout)
    try:
        connection.sendall(json.dumps(payload, default=str).encode() + b"\n")
    except OSError as exc:  # gone, or not reading: nobody to tell
        log.debug("control: could not answer a client: %s", exc)


class ControlUnavailable(Exception):
    """The daemon is not running, or its socket cannot be reached."""


class ControlRefused(ControlUnavailable):
    """The daemon answered, and said no (bad request, the command failed)."""


class ControlDenied(ControlUnavailable):
    """Not allowed: the socket (or its folder) cannot be opened by this user, or the daemon
    said the command needs more. Not "not running": the agent may well be up."""


def request(path: Path, command: str, args: Mapping[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
    """Client side: send one command, return its result or raise with the daemon's reason."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(path))
            client.sendall(json.dumps({"command": command, "args": dict(args or {})}).encode()
                           + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = client.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError as exc:
        raise ControlUnavailable(f"the agent is not running (no control socket at {path})") \
            from exc
    except ConnectionRefusedError as exc:
        raise ControlUnavailable(f"the agent is not running (nobody listens on {path})") from exc
    except PermissionError as exc:
        raise ControlDenied(f"permission denied on {path}") from exc
    except OSError as exc:
        raise ControlUnavailable(f"cannot talk to the agent at {path}: {exc}") from exc
    try:
        response = json.loads(data)
    except ValueError as exc:
        raise ControlUnavailable(f"the agent sent an unreadable answer: {data[:200]!r}") from exc
    if not response.get("ok"):
        error = response.get("error", "the agent refused the request")
        if error.startswith("permission denied"):
            raise ControlDenied(error)
        raise ControlRefused(error)
    return response["result"]
