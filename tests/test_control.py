"""The control socket's protocol and what `edge-agent diag` makes of its answers."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.control import (
    USAGE,
    Command,
    ControlRefused,
    ControlServer,
    ControlUnavailable,
    parse_request,
    request,
)


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
