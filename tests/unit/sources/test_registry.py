"""The source registry (agent/sources/registry.py): its table of type modules is the package's
own declarations, and a lookup imports only the module of the type it names."""

from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys

import agent.sources
from agent.sources.registry import MODULES, PYTHON_CAN, SourceType, source_type, type_names
from tests.helpers.agent_setup import REPO


def declared_types() -> dict[str, str]:
    """Every SOURCE_TYPE the package's modules declare: its name, its module."""
    found = {}
    for module in pkgutil.iter_modules(agent.sources.__path__):
        declared = getattr(importlib.import_module(f"agent.sources.{module.name}"),
                           "SOURCE_TYPE", None)
        if isinstance(declared, SourceType):
            found[declared.name] = module.name
    return found


def test_the_table_names_every_declared_type_and_its_module():
    assert declared_types() == MODULES
    assert type_names() == sorted(set(MODULES) - {PYTHON_CAN})


def test_a_name_no_module_declares_is_a_python_can_interface():
    assert source_type("socketcan") is source_type("pcan") is source_type(PYTHON_CAN)
    assert source_type("replay").name == "replay"


PROBE = """
import json, sys
from agent.sources.registry import source_type
source_type(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def modules_after_looking_up(name: str) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, name], capture_output=True, text=True,
                            check=True, timeout=60, cwd=REPO)
    return set(json.loads(result.stdout))


def test_a_lookup_imports_only_its_type_and_no_reading_library():
    """Looking a type up (what loading a config does) imports its module only: neither the
    other types' modules nor python-can, cantools or pyserial, which the sources import when
    they are opened."""
    modules = modules_after_looking_up("socketcan")
    others = {f"agent.sources.{module}" for module in MODULES.values()} - {"agent.sources.canbus"}
    assert "agent.sources.canbus" in modules and not modules & others
    assert not {"can", "cantools", "serial"} & modules
    replay = modules_after_looking_up("replay")
    assert not {"can", "cantools", "agent.sources.player", "agent.sources.gpsd"} & replay
