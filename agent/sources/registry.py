"""Data sources, chosen by `type` in config: `replay`, `gpsd`, `serial` (sensor lines) or any
python-can interface name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import can

from agent.config.schema import VALUE_SOURCE_TYPES, SourceConfig
from agent.errors import ConfigError
from agent.sources.base import Source
from agent.sources.canbus import CanBusSource
from agent.sources.catalogue import Catalogue
from agent.sources.gpsd import GpsdSource
from agent.sources.gpsd_json import GPS_CATALOGUE
from agent.sources.health import SourceHealth
from agent.sources.replay import ReplaySource
from agent.sources.sensor_protocols import protocol_class
from agent.sources.serial_sensors import SerialSensorSource

__all__ = ["Source", "catalogue_for", "is_value_source", "open_source"]


def is_value_source(config: SourceConfig) -> bool:
    """gpsd and serial sensors deliver `Reading`s of a catalogue, not CAN frames of a DBC."""
    return config.type in VALUE_SOURCE_TYPES


def catalogue_for(config: SourceConfig) -> Catalogue:
    """The quantities a gpsd or serial source delivers (its `<name>.<quantity>` signals)."""
    if config.type == "gpsd":
        return GPS_CATALOGUE
    return protocol_class(config.protocol).catalogue


def _open_value_source(config: SourceConfig, health: SourceHealth) -> Source:
    if config.type == "gpsd":
        return GpsdSource(config.name, health, config.host, config.gpsd_port,
                          config.stale_after)
    return SerialSensorSource(config.name, health, str(config.port), config.baudrate,
                              protocol_class(config.protocol), config.stale_after)


def open_source(config: SourceConfig, can_filters: Sequence[dict[str, Any]],
                health: SourceHealth) -> Source:
    """Make the source `config` names; it reports into `health` (shared with its decoder)."""
    if is_value_source(config):
        return _open_value_source(config, health)
    if config.type == "replay":
        assert config.path is not None  # checked when the config was loaded
        return ReplaySource(config.name, health, config.path, speed=config.speed,
                            loop=config.loop, rebase=config.rebase, channel=config.channel)
    if config.type not in can.interfaces.VALID_INTERFACES:
        raise ConfigError(f"source {config.name!r}: unknown type {config.type!r}; use "
                          f"'replay', 'gpsd', 'serial' or a python-can interface: "
                          f"{', '.join(sorted(can.interfaces.VALID_INTERFACES))}")
    options: dict[str, Any] = {"interface": config.type, "channel": config.channel,
                               "bitrate": config.bitrate}
    if config.fd:
        options.update(fd=True, data_bitrate=config.data_bitrate)
    return CanBusSource(config.name, health, options, can_filters,
                        receive_buffer=config.receive_buffer_kb * 1024)
