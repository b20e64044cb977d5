"""What a command line imports: only its own command's module, so that a diagnostics command
that only talks to the socket starts without cantools, python-can, numpy or cryptography
(docs/performance.md has the times). Asserts on the modules imported, never on time."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from agent.cli import build_parser
from tests.helpers.agent_setup import REPO

HEAVY = ("cantools", "can", "numpy", "cryptography", "paho", "zstandard", "cbor2",
         "agent.sources.registry", "agent.cli.diag.checks")

PROBE = """
import json, sys
from agent.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
sys.stdout.flush()
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def imported_by(*argv: str) -> tuple[int, set[str]]:
    """Run `edge-agent ARGV` in a fresh interpreter: its exit code and every module loaded."""
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True,
                            text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)},
                            cwd="/")
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return report["code"], {name.split(".")[0] if not name.startswith("agent.") else name
                            for name in report["modules"]}


@pytest.mark.parametrize("argv", [
    ("diag", "status", "--json"),
    ("diag", "signals", "--json", "ESP_*"),
    ("diag", "buses", "--json"),
    ("diag", "live", "--once", "--json"),
    ("diag", "queue", "--json"),
    ("diag", "flush", "--json"),
    ("diag", "privacy", "--json"),
])
def test_diag_commands_that_only_ask_the_socket_import_no_heavy_library(tmp_path, argv):
    config = tmp_path / "agent.toml"  # the socket comes from the config, as on a vehicle
    config.write_text(f'[control]\nsocket = "{tmp_path / "none.sock"}"\n', encoding="utf-8")
    code, modules = imported_by(*argv, "--config", str(config))
    assert code == 3  # not running: the whole path was taken, config and socket included
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))
    if argv[1] != "live":  # the monitor's module is its screen
        assert "rich" not in modules  # --json prints no table


def test_config_show_imports_none_of_the_installation_checks():
    """`diag config show` reads and validates the file: loading a config imports the source
    types (python-can, cantools), but not what selftest needs (cryptography, paho, the DBC
    loader, the sampling ring's numpy)."""
    code, modules = imported_by("diag", "config", "show", "--config", str(REPO / "config.toml"))
    assert code == 0
    unwanted = {"cryptography", "paho", "numpy", "zstandard", "cbor2", "agent.cli.diag.checks",
                "agent.decoding.dbc", "rich"}
    assert not modules & unwanted, sorted(modules & unwanted)


def test_config_check_does_not_import_numpy():
    """The plan summary of `config check` needs the ring's record size, not the ring (numpy):
    its copy of the size must stay the ring's."""
    from agent.cli.config import RING_BYTES_PER_RECORD
    from agent.sampling.ring import BYTES_PER_RECORD

    assert RING_BYTES_PER_RECORD == BYTES_PER_RECORD
    code, modules = imported_by("config", "check", str(REPO / "config.toml"))
    assert code == 0  # valid: the whole check ran, plan summary included
    assert "numpy" not in modules and "agent.sampling.ring" not in modules


def test_help_imports_no_command_module_and_lists_every_command():
    code, modules = imported_by("--help")
    assert code is None or code == 0
    assert not {name for name in modules if name.startswith("agent.cli.")}
    code, modules = imported_by("diag", "--help")
    assert {name for name in modules if name.startswith("agent.cli.diag.")} == set()


def test_only_the_named_diag_command_is_built():
    parser = build_parser(["diag", "status", "--json"])
    assert parser.parse_args(["diag", "status", "--json"]).diag_command == "status"
    assert "agent.cli.diag.status" in sys.modules


def helps(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The help line of every command and diag command, as `--help` lists them."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                found[choice.dest] = choice.help
            diag = action.choices.get("diag")
            if diag is not None:
                found.update({f"diag {k}": v for k, v in helps(diag).items()})
    return found


def test_the_help_lines_listed_without_importing_are_the_commands_own():
    """`--help` lists the tables in agent/cli; each module declares its own help line: they
    must not drift apart."""
    full = helps(build_parser())
    listed = {**helps(build_parser(["--help"])), **helps(build_parser(["diag", "--help"]))}
    assert listed == full
