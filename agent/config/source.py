"""The keys every [[sources]] entry has; each source type adds its own in its own module.

Kept apart from agent/config/schema.py so that a source module can define its config class
on `SourceConfig` without loading the whole schema (which looks the source types up).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

# Marks a field that is not a key of the file: the loader sets it to where the file sets the
# key named by the marker ("config.toml:12: [sources.can0] dbc"), for errors found later.
ORIGIN_OF = "origin_of"


@dataclass(frozen=True)
class SourceConfig:
    """What every [[sources]] entry has. Each source type adds its own keys in its own config
    class, in its own module (`CanBusConfig` in agent/sources/canbus.py, ...); the loader
    picks the class by `type` through agent/sources/registry.py."""

    name: str
    type: str
    dbc: tuple[Path, ...] = ()
    # Refuse a DBC whose signals overlap (as cantools' strict mode) instead of loading it
    # with a warning for each overlap (agent/decoding/dbc.py).
    strict: bool = False
    # Seconds without valid data before a gpsd or serial source is reported stale.
    stale_after: float = 10.0
    # Not a key: where the file names the DBCs, for DBC errors raised when they load.
    dbc_origin: str = field(default="", compare=False, metadata={ORIGIN_OF: "dbc"})
