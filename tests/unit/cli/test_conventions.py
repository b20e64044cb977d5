"""What every `edge-agent` command does alike: --log-level anywhere, help for every argument,
a reader that leaves early, log lines for journald."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys

import pytest

from agent.cli import JournalFormatter, build_parser, stderr_is_journal
from tests.helpers.agent_setup import REPO
from tests.helpers.dbc_fixtures import write_small_dbc

ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def walk(parser: argparse.ArgumentParser, path: str = "edge-agent"):
    """(command path, parser) for `parser` and every parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, f"{path} {name}")


@pytest.mark.parametrize("argv, level", [
    (["run", "--config", "x.toml"], "INFO"),
    (["--log-level", "warning", "run", "--config", "x.toml"], "WARNING"),
    (["run", "--config", "x.toml", "--log-level", "debug"], "DEBUG"),
    (["diag", "config", "check", "x.toml", "--log-level", "ERROR"], "ERROR"),
    (["--log-level", "debug", "keys", "id", "--log-level", "error", "x.pub"], "ERROR"),
])
def test_log_level_is_taken_before_or_after_the_command(argv, level):
    assert build_parser().parse_args(argv).log_level == level


def test_every_argument_of_every_command_has_help():
    missing = []
    for path, parser in walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{path} {choice.dest}" for choice in action._choices_actions
                            if not choice.help]
            elif not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def closed_pipe_run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """`edge-agent ARGS | head -0`: stdout is a pipe whose reader is gone before the command
    starts, so its first write fails, whatever the speed of the machine."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "agent", *args], stdout=write_end,
                              stderr=subprocess.PIPE, input=stdin, text=True, timeout=60,
                              env=ENV, cwd="/")
    finally:
        os.close(write_end)


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    dbc = write_small_dbc(tmp_path)
    log = tmp_path / "drive.log"
    log.write_text("".join(f"({i}.0) can0 100#0000000000000000\n" for i in range(5000)))
    for args in (["decode", "--dbc", str(dbc), str(log)],
                 ["diag", "buses", "--json", "--socket", str(tmp_path / "none.sock")],
                 ["diag", "--help"]):
        result = closed_pipe_run(*args)
        assert result.returncode in (0, 141), (args, result.stderr)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, args


def test_journal_lines_carry_a_syslog_priority_and_no_timestamp():
    formatter = JournalFormatter()

    def line(level: int, message: str) -> str:
        return formatter.format(logging.LogRecord("agent.x", level, __file__, 1, message, None,
                                                  None))

    assert line(logging.ERROR, "broken") == "<3>ERROR agent.x: broken"
    assert line(logging.WARNING, "odd") == "<4>WARNING agent.x: odd"
    assert line(logging.INFO, "fine") == "<6>INFO agent.x: fine"
    assert line(logging.DEBUG, "two\nlines") == "<7>DEBUG agent.x: two\n<7>lines"


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path):
    with (tmp_path / "err").open("w") as stream, (tmp_path / "other").open("w") as other:
        status = os.fstat(stream.fileno())
        named = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        assert stderr_is_journal(named, stream.fileno())
        assert not stderr_is_journal(named, other.fileno())
        assert not stderr_is_journal({}, stream.fileno())
        assert not stderr_is_journal({"JOURNAL_STREAM": "junk"}, stream.fileno())
