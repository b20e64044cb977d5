"""The local control socket: how `edge-agent diag` talks to the running daemon.

A Unix stream socket (never a network port), mode 0660, group from config. Each connection
carries one JSON request line ({"command": ..., "args": {...}}, at most MAX_REQUEST bytes) and
gets one JSON response line. The kernel tells us who the peer is (SO_PEERCRED): read-only
commands are open to root, the service user and members of the diagnostics group;
state-changing ones only to root and the service user.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_REQUEST = 4096
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
    def __init__(self, path: Path, commands: Mapping[str, Command], *, group: str = "") -> None:
        self.path = path
        self._commands = commands
        self._group = group
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        outer = self

        class _Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                outer._serve(self.connection, self.rfile, self.wfile)

        server = socketserver.ThreadingUnixStreamServer(str(self.path), _Handler)
        server.daemon_threads = True
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

    def _serve(self, connection: socket.socket, rfile: Any, wfile: Any) -> None:
        line = rfile.readline(MAX_REQUEST + 1)
        if len(line) > MAX_REQUEST:
            return _reply(wfile, error=f"request larger than {MAX_REQUEST} bytes")
        parsed = parse_request(line)
        if parsed is None:
            return _reply(wfile, error=USAGE)
        name, args = parsed
        command = self._commands.get(name)
        if command is None:
            return _reply(wfile, error=f"unknown command {name!r}; known: "
                                       f"{', '.join(sorted(self._commands))}")
        peer = peer_of(connection)
        if not self._allowed(peer, command):
            log.warning("control: refused %s from uid %d", name, peer.uid)
            needs = ("root or the service user" if command.changes_state
                     else f"membership of group {self._group!r}")
            return _reply(wfile, error=f"permission denied: {name} needs {needs}")
        try:
            return _reply(wfile, result=command.handler(args))
        except Exception as exc:
            log.exception("control: %s failed", name)
            return _reply(wfile, error=f"{name} failed: {exc}")

    def _allowed(self, peer: Peer, command: Command) -> bool:
        if peer.uid in (0, os.getuid()):
            return True
        if command.changes_state:
            return False
        return bool(self._group) and user_in_group(peer.uid, peer.gid, self._group)


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


def _reply(wfile: Any, *, result: Any = None, error: str | None = None) -> None:
    payload = {"ok": error is None, "result": result} if error is None else {"ok": False,
                                                                             "error": error}
    wfile.write(json.dumps(payload, default=str).encode() + b"\n")


class ControlUnavailable(Exception):
    """The daemon is not running, or its socket cannot be reached."""


class ControlRefused(ControlUnavailable):
    """The daemon answered, and said no (permission, bad request, the command failed)."""


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
        raise ControlUnavailable(f"permission denied on {path}: join the diagnostics group "
                                 "(e.g. sudo usermod -aG edge-agent-diag $USER) or use sudo") \
            from exc
    except OSError as exc:
        raise ControlUnavailable(f"cannot talk to the agent at {path}: {exc}") from exc
    try:
        response = json.loads(data)
    except ValueError as exc:
        raise ControlUnavailable(f"the agent sent an unreadable answer: {data[:200]!r}") from exc
    if not response.get("ok"):
        raise ControlRefused(response.get("error", "the agent refused the request"))
    return response["result"]
