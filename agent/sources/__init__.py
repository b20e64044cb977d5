"""Data sources, chosen by `type` in config: `replay` or any python-can interface name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import can

from agent.config import SourceConfig
from agent.errors import ConfigError
from agent.health import SourceHealth
from agent.sources.base import Source
from agent.sources.canbus import CanBusSource
from agent.sources.replay import ReplaySource

__all__ = ["Source", "open_source"]


def open_source(config: SourceConfig, can_filters: Sequence[dict[str, Any]],
                health: SourceHealth) -> Source:
    """Make the source `config` names; it reports into `health` (shared with its decoder)."""
    if config.type == "replay":
        assert config.path is not None  # checked when the config was loaded
        return ReplaySource(config.name, health, config.path, speed=config.speed,
                            loop=config.loop, rebase=config.rebase)
    if config.type not in can.interfaces.VALID_INTERFACES:
        raise ConfigError(f"source {config.name!r}: unknown type {config.type!r}; use "
                          f"'replay' or a python-can interface: "
                          f"{', '.join(sorted(can.interfaces.VALID_INTERFACES))}")
    options: dict[str, Any] = {"interface": config.type, "channel": config.channel,
                               "bitrate": config.bitrate}
    if config.fd:
        options.update(fd=True, data_bitrate=config.data_bitrate)
    return CanBusSource(config.name, health, options, can_filters)
