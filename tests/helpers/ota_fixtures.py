"""The local config of the vehicle that the OTA tests and the ota-update fuzz target send
updates to (car-1 in group eu-west, trusting backend.pub)."""

from __future__ import annotations

import shutil
from pathlib import Path

BUNDLED_DBC = Path(__file__).resolve().parents[2] / "dbc" / "vehicle.dbc"

LOCAL_CONFIG = """\
version = 3

[vehicle]
id = "car-1"
groups = ["eu-west"]

[[sources]]
name = "can0"
type = "virtual"
channel = "bus0"
dbc = ["vehicle.dbc"]

[keys]
signing_key = "vehicle.key"

[uplink]
tls = false

[ota]
trusted_keys = ["backend.pub"]
"""


def write_local_config(directory: Path, channel: str = "bus0") -> Path:
    """`directory`/config.toml: LOCAL_CONFIG with its virtual bus on `channel`, beside a copy
    of the bundled DBC that it names."""
    shutil.copy(BUNDLED_DBC, directory / "vehicle.dbc")
    path = directory / "config.toml"
    path.write_text(LOCAL_CONFIG.replace('channel = "bus0"', f'channel = "{channel}"'))
    return path
