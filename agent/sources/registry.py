"""Source types by name, as python-can keeps its `BACKENDS`: the `type` of a [[sources]] entry.

Each module of this package that is a source type declares one `SOURCE_TYPE`: its config
class (the keys of its entry), its checks, how to open it, where it reads from and its
warnings. `MODULES` names each type's module, and only the module of a type a config names is
imported, when it is first looked up: a config with one SocketCAN bus loads neither the
serial sensors' pyserial nor the replay's log readers, and `edge-agent config check` stays
well under a second (docs/performance.md). A new source type is one new module, one line in
`MODULES` (tests/unit/sources/test_registry.py checks the table against the modules) and its
docs. A `type` that `MODULES` does not name is a python-can interface (`socketcan`, `slcan`,
`pcan`, ...): agent/sources/canbus.py's type takes it, and refuses a name python-can does not
know when the source is opened.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from agent.config.source import SourceConfig
from agent.errors import ConfigError
from agent.sources.base import Source
from agent.sources.catalogue import Catalogue
from agent.sources.health import SourceHealth, SourceStats

# The type that takes every name no module declares: python-can's interfaces.
PYTHON_CAN = "python-can"

# Each type's name: the module of this package that declares it.
MODULES = {
    PYTHON_CAN: "canbus",
    "replay": "replay",
    "gpsd": "gpsd",
    "serial": "serial_sensors",
    "diagnostics": "diagnostics",
}

# `error(key, message)` makes the ConfigError that names the file, line, entry and key.
ErrorAt = Callable[[str, str], ConfigError]


@dataclass(frozen=True)
class SourceType:
    """What the agent needs to know of one source type, declared in the type's own module.

    `catalogue` is set for value sources (gpsd, serial sensors): they deliver the quantities
    of a catalogue instead of the CAN frames of a DBC. `recorded` is set for a source that
    plays a recording: its time is the recording's, and filters do not change what it plays.
    """

    name: str
    config: type[SourceConfig]
    check: Callable[[Any, ErrorAt], None]
    open: Callable[[Any, Sequence[dict[str, Any]], SourceHealth], Source]
    where: Callable[[Any], str]
    warnings: Callable[[Mapping[str, Any]], list[str]]
    catalogue: Callable[[Any], Catalogue] | None = None
    recorded: bool = False


@cache
def _declared(module: str) -> SourceType:
    declared: SourceType = importlib.import_module(f"agent.sources.{module}").SOURCE_TYPE
    return declared


def source_type(name: str) -> SourceType:
    """The type a [[sources]] entry's `type` names (python-can's for any other name); its
    module is imported now, if it was not yet."""
    return _declared(MODULES.get(name, MODULES[PYTHON_CAN]))


def type_names() -> list[str]:
    """The names of the declared types (python-can's interfaces come on top of these)."""
    return sorted(name for name in MODULES if name != PYTHON_CAN)


def is_value_source(config: SourceConfig) -> bool:
    """gpsd and serial sensors deliver `Reading`s of a catalogue, not CAN frames of a DBC."""
    return source_type(config.type).catalogue is not None


def catalogue_for(config: SourceConfig) -> Catalogue:
    """The quantities a value source delivers (its `<name>.<quantity>` signals)."""
    catalogue = source_type(config.type).catalogue
    assert catalogue is not None, f"{config.type} is not a value source"
    return catalogue(config)


def open_source(config: SourceConfig, can_filters: Sequence[dict[str, Any]],
                health: SourceHealth) -> Source:
    """Make the source `config` names; it reports into `health` (shared with its decoder)."""
    return source_type(config.type).open(config, can_filters, health)


def source_stats(source: Source, config: SourceConfig) -> SourceStats:
    """A snapshot of `source` for diagnostics, described as its type describes it."""
    health = source.health
    return SourceStats(name=source.name, type=config.type,
                       where=source_type(config.type).where(config),
                       value_source=is_value_source(config), counters=health.counters(),
                       last_failure=health.last_failure, last_frame_time=health.last_frame_time,
                       last_received=health.last_received,
                       stale_after=config.stale_after, finished=source.finished.is_set())


def warnings(source: Mapping[str, Any]) -> list[str]:
    """The problems of one source's status document, in its type's words."""
    return source_type(source["type"]).warnings(source)
