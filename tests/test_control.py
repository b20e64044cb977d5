"""The control socket's protocol and what `edge-agent diag` makes of its answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.cli import main
from agent.control import Command, ControlRefused, ControlServer, ControlUnavailable, request


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
