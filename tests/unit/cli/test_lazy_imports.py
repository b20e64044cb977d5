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
    """`diag config show` reads and validates the file: loading a config imports the module of
    each source type it names, which imports neither python-can nor cantools, and nothing
    that selftest needs (cryptography, paho, the DBC loader, the sampling ring's numpy)."""
    code, modules = imported_by("diag", "config", "show", "--config", str(REPO / "config.toml"))
    assert code == 0
    unwanted = {"can", "cantools", "cryptography", "paho", "numpy", "zstandard", "cbor2",
                "agent.cli.diag.checks", "agent.decoding.dbc", "rich"}
    assert not modules & unwanted, sorted(modules & unwanted)


# What a warm DBC cache spares the offline checks: the parser (cantools, which imports
# python-can) and the decoding's numpy. agent/decoding/cache.py, docs/performance.md.
NOT_WITH_A_WARM_CACHE = {"can", "cantools", "numpy", "agent.decoding.database",
                         "agent.sources.player", "serial"}

SOURCES = {
    "socketcan": 'type = "socketcan"\nchannel = "can0"\n',
    "replay": f'type = "replay"\npath = "{REPO / "dbc" / "drive.log.gz"}"\n',
}


def write_agent_config(directory, source: str):
    """The shipped config's DBC and sampling, with a source of type `source` and its own
    state folder (whose cache holds the parsed DBC once it is warm)."""
    (directory / "state").mkdir()
    config = directory / "agent.toml"
    config.write_text(f"""
[vehicle]
id = "v1"

[[sources]]
name = "can0"
dbc = ["{REPO / "dbc" / "vehicle.dbc"}"]
{SOURCES[source]}
[keys]
signing_key = "k.key"

[uplink]
tls = false

[state]
directory = "{directory / "state"}"
""", encoding="utf-8")
    return config


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_config_check_with_a_warm_cache_imports_neither_cantools_nor_python_can(tmp_path,
                                                                                source):
    """The first check parses the DBC with cantools (a cold cache) and fills the cache; the
    next plans from the cache's tables alone, and finds the same plan."""
    config = write_agent_config(tmp_path, source)
    cold, cold_modules = imported_by("config", "check", "--json", str(config))
    assert cold == 0 and "cantools" in cold_modules  # parsed: the cache was empty
    assert list((tmp_path / "state" / "cache").iterdir())
    warm, warm_modules = imported_by("config", "check", "--json", str(config))
    assert warm == 0
    assert not warm_modules & NOT_WITH_A_WARM_CACHE, sorted(warm_modules & NOT_WITH_A_WARM_CACHE)
    assert "agent.sources.gpsd" not in warm_modules  # only the source type the config names


def test_config_check_plans_alike_from_a_cold_and_a_warm_cache(tmp_path, capsys):
    from agent.cli import main
    from agent.decoding import dbc

    config = write_agent_config(tmp_path, "socketcan")
    verdicts = []
    for _ in range(2):
        dbc._PARSED.clear()  # each check as a new process: to the disk cache or cantools
        assert main(["config", "check", "--json", str(config)]) == 0
        verdicts.append(json.loads(capsys.readouterr().out))
    dbc._PARSED.clear()
    assert verdicts[0] == verdicts[1] and verdicts[0]["plan"]["sources"][0]["signals"] > 900


@pytest.mark.parametrize("argv", [("diag", "selftest", "--no-network", "--json"),
                                  ("diag", "bundle", "--json")])
def test_offline_diagnostics_with_a_warm_cache_import_neither_cantools_nor_python_can(
        tmp_path, argv):
    config = write_agent_config(tmp_path, "socketcan")
    assert imported_by("config", "check", str(config))[0] == 0  # warms the cache
    options = ["--output", str(tmp_path / "bundle.tar.gz")] if argv[1] == "bundle" else []
    code, modules = imported_by(*argv, *options, "--config", str(config))
    assert code in (0, 1)  # selftest fails: no signing key here; the whole path was taken
    assert not modules & NOT_WITH_A_WARM_CACHE, sorted(modules & NOT_WITH_A_WARM_CACHE)
    assert "paho" not in modules or argv[1] == "bundle"


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
