"""`edge-agent`: the command line. Each subcommand is its own module; this file only collects.

Only the module of the command being run is imported, and for `diag` only that diagnostics
command's module: `--help` lists the commands from the tables below without importing any.
A diagnostics command that only talks to the socket then answers in about 0.2 s, without the
half second and more that cantools, python-can, numpy and cryptography take to import
(docs/performance.md), and the daemon does not carry the diagnostics' terminal UI (rich) in
its resident memory.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from agent.errors import AgentError

# name: (its module under agent.cli, its line in `edge-agent --help`)
COMMANDS = {
    "run": ("run", "run the agent (the daemon)"),
    "config": ("config", "check a config file, or reset the anti-rollback floor"),
    "decode": ("decode", "decode a candump/ASC/BLF log to JSON Lines"),
    "verify": ("verify", "replay a log through the agent and compare every sample with "
                         "cantools"),
    "keys": ("keys", "make or inspect the vehicle signing key"),
    "diag": ("diag", "diagnostics for field technicians"),
    "replay": ("replay", "play a CAN log onto an interface (canplayer without can-utils)"),
    "privacy": ("privacy", "erase the data the vehicle holds for the owner"),
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

# What a shell reports for a command killed by SIGPIPE (128 + 13): the reader left early.
EXIT_BROKEN_PIPE = 141

# syslog priorities by logging level, for journald's "<N>" line prefixes (sd-daemon(3)).
SYSLOG_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                   logging.CRITICAL: 2}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for the command line `argv`, which imports only the modules of the commands
    it names; without `argv`, the whole parser with every command's module."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-vehicle telematics edge agent: samples CAN signals through DBC files "
                    "into signed, compressed batches published over MQTT.")
    _add_log_level(parser, "INFO")
    subparsers = parser.add_subparsers(title="commands", dest="command", required=True,
                                       metavar="COMMAND")
    add_commands(subparsers, __name__, COMMANDS, argv)
    for command in _subcommand_parsers(parser):
        _add_log_level(command, argparse.SUPPRESS)  # given or not, the top level's counts
    return parser


def add_commands(subparsers: argparse._SubParsersAction, package: str,
                 commands: Mapping[str, tuple[str, str]], argv: Sequence[str] | None) -> None:
    """Add `commands` (name: (module in `package`, help)) to `subparsers`. Without `argv`,
    every module adds its own; with it, only the module of the command `argv` names does (a
    module with a COMMANDS table of its own gets the rest of `argv` to choose from), and when
    it names none of them (`--help`, a typo), each is listed by its name and help alone."""
    named = None if argv is None else _command(argv, commands)
    if argv is not None and named is None:
        for name, (_, text) in commands.items():
            subparsers.add_parser(name, help=text)
        return
    modules = [commands[named][0]] if named is not None else \
        list(dict.fromkeys(module for module, _ in commands.values()))
    for name in modules:
        module = importlib.import_module(f"{package}.{name}")
        if hasattr(module, "COMMANDS"):
            rest = None if argv is None or named is None else argv[argv.index(named) + 1:]
            module.add_subparser(subparsers, rest)
        else:
            module.add_subparser(subparsers)


def _add_log_level(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--log-level", default=default, type=str.upper, choices=LOG_LEVELS,
                        metavar="LEVEL",
                        help="how much to log to stderr: debug, info, warning or error "
                             "(default: info); before or after the command")


def _subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below `parser`, at any depth (`diag config check`, say)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *_subcommand_parsers(child)]
    return found


def _command(argv: Sequence[str], commands: Mapping[str, object]) -> str | None:
    """The command of `commands` that `argv` names (its first word that is no option)."""
    words = iter(argv)
    for word in words:
        if word == "--log-level":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in commands else None
    return None


class JournalFormatter(logging.Formatter):
    """Lines for journald: the record's syslog priority as a `<N>` prefix, which journald
    turns into the entry's priority (so `journalctl -p warning` works), and no timestamp,
    since the journal stamps every line itself."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 3 if record.levelno > logging.INFO else 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def stderr_is_journal(environ: Mapping[str, str], stderr_fd: int = 2) -> bool:
    """Whether stderr is systemd's journal stream: JOURNAL_STREAM names its device and inode
    (systemd.exec(5)), which a child whose stderr was redirected elsewhere does not match."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        status = os.fstat(stderr_fd)
        return (int(device), int(inode)) == (status.st_dev, status.st_ino)
    except (ValueError, OSError):
        return False


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if stderr_is_journal(os.environ) else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(sys.argv[1:] if argv is None else list(argv))
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE


def _main(argv: list[str]) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit:
        sys.stdout.flush()  # --help printed: a reader gone early is caught in main
        raise
    configure_logging(args.log_level)
    try:
        code = int(args.func(args))
    except AgentError as exc:
        print(f"edge-agent: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()  # here, so that a reader gone early is caught in main, not at exit
    return code


def _quiet_stdout() -> None:
    """The reader of stdout left (`edge-agent diag buses --json | head -1`): whatever is still
    buffered goes nowhere, so that Python's flush at exit prints no BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
