"""The control socket's protocol and what `edge-agent diag` makes of its answers."""

from __future__ import annotations

import json
import select
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.runtime.control import (
    USAGE,
    Command,
    ControlRefused,
    ControlServer,
    ControlUnavailable,
    parse_request,
    request,
)
from tests.helpers.support import wait_until


def failing(args: dict) -> str:
    raise RuntimeError("config rejected, still running version 7")


@pytest.fixture
def server(tmp_path: Path):
    path = tmp_path / "control.sock"
    control = ControlServer(path, {"hello": Command(lambda args: {"hi": args.get("name")}),
                                   "reload": Command(failing)})
    control.start()
    yield path
    control.stop()


def test_a_command_answers_with_its_result(server: Path):
    assert request(server, "hello", {"name": "tech"}) == {"hi": "tech"}


def test_the_daemon_saying_no_is_told_apart_from_not_running(server: Path, tmp_path: Path):
    with pytest.raises(ControlRefused, match="unknown command 'nope'"):
        request(server, "nope")
    with pytest.raises(ControlRefused, match="still running version 7"):
        request(server, "reload")
    with pytest.raises(ControlUnavailable, match="not running") as missing:
        request(tmp_path / "absent.sock", "hello")
    assert not isinstance(missing.value, ControlRefused)


def test_diag_exits_1_when_the_daemon_refuses_and_3_when_it_is_absent(server: Path,
                                                                       tmp_path: Path, capsys):
    assert main(["diag", "reload", "--socket", str(server), "--json"]) == 1
    answer = json.loads(capsys.readouterr().out)
    assert answer["running"] is True and "still running version 7" in answer["error"]
    assert main(["diag", "reload", "--socket", str(tmp_path / "absent.sock")]) == 3
    assert "Offline checks still work" in capsys.readouterr().err


def exchange(path: Path, data: bytes) -> dict:
    """Send raw bytes as a client would, and read the one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(path))
        client.sendall(data)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            answer += chunk
    return json.loads(answer)


@pytest.mark.parametrize("line", [
    b"[" * 3000,                 # nesting too deep for json: RecursionError
    b'{"command": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b"{not json", b"\xff\xfe", b"[1, 2]", b'"hello"', b"7", b"null",
    b'{"args": {}}', b'{"command": 1}', b'{"command": "hello", "args": []}',
])
def test_any_malformed_request_gets_a_reply_that_says_what_to_send(server: Path, line: bytes):
    assert exchange(server, line + b"\n") == {"ok": False, "error": USAGE}
    assert request(server, "hello", {"name": "next"}) == {"hi": "next"}  # still serving


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(alphabet="[]{}\":,1a ", max_size=4000).map(str.encode))
def test_any_bytes_are_a_request_or_none(line: bytes):
    parsed = parse_request(line)
    assert parsed is None or (isinstance(parsed[0], str) and isinstance(parsed[1], dict))


def test_idle_connections_hold_a_bounded_number_of_threads_and_time_out(tmp_path: Path):
    """1,000 half-open connections once held 1,000 threads for as long as they stayed open."""
    path = tmp_path / "control.sock"
    control = ControlServer(path, {"hello": Command(lambda args: "hi")}, max_connections=4,
                            request_timeout=2.0)
    control.start()
    baseline = threading.active_count()
    idle = []
    try:
        for _ in range(60):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.connect(str(path))
            idle.append(client)
        # The connections over the limit are answered at once; the others wait for a request.
        assert wait_until(lambda: len(select.select(idle, [], [], 0)[0]) >= 56, timeout=10), \
            "connections over the limit got no answer"
        assert threading.active_count() <= baseline + 4
        replies = [json.loads(client.makefile("rb").readline()) for client in idle]
        busy = [r for r in replies if "connections already" in r.get("error", "")]
        timed_out = [r for r in replies if "no request within 2 s" in r.get("error", "")]
        assert len(busy) >= 56 and len(busy) + len(timed_out) == 60, replies
        assert busy[0]["error"] == ("the agent is serving 4 diagnostics connections "
                                    "already; try again in a moment")
        # The idle ones were dropped after their 2 s: a real request is served again.
        assert request(path, "hello") == "hi"
        assert wait_until(lambda: threading.active_count() <= baseline)
    finally:
        for client in idle:
            client.close()
        control.stop()


def test_a_request_sent_slowly_must_arrive_whole_within_the_timeout(tmp_path: Path):
    path = tmp_path / "control.sock"
    control = ControlServer(path, {"hello": Command(lambda args: "hi")}, request_timeout=1.0)
    control.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(path))
            # A byte every 0.1 s: each read is quick, the request as a whole is not.
            for byte in b'{"command": "hello", "args": {}}':
                client.sendall(bytes([byte]))
                if select.select([client], [], [], 0.1)[0]:
                    break
            assert json.loads(client.makefile("rb").readline()) == {
                "ok": False, "error": "no request within 1 s: send one JSON line at once"}
        assert request(path, "hello") == "hi"
    finally:
        control.stop()
