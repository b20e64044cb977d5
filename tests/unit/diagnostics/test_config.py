"""[[diagnostics.requests]]: the `<bus>.diag` source they make, and their mistakes named."""

from pathlib import Path

import pytest

from agent.config.schema import load_config
from agent.errors import ConfigError
from agent.sources.registry import catalogue_for

ROOT = Path(__file__).parents[3]
BASE = f"""
[vehicle]
id = "v1"
[keys]
signing_key = "k.pem"
[uplink]
tls = false
[[sources]]
name = "can0"
type = "virtual"
channel = "x"
dbc = ["{ROOT}/dbc/vehicle.dbc"]
[diagnostics]
catalogue = "{ROOT}/dbc/example_dids.toml"
"""


def request(**keys):
    lines = "\n".join(f"{key} = {value!r}" if isinstance(value, str) else f"{key} = {value}"
                      for key, value in keys.items())
    return f"[[diagnostics.requests]]\n{lines.replace(chr(39), chr(34))}\n"


def load(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(BASE + text)
    return load_config(path)


def test_requests_make_one_value_source_per_bus(tmp_path):
    config = load(tmp_path, request(name="rpm", bus="can0", service="obd_pid", pid=0x0C)
                  + request(name="soh", bus="can0", service="read_did", did=0x0103,
                            request_id=0x7E4, response_id=0x7EC)
                  + request(name="engine", bus="can0", service="read_dtc"))
    assert [s.name for s in config.sources] == ["can0", "can0.diag"]
    catalogue = catalogue_for(config.sources[1])
    assert [(s.quantity, s.unit) for s in catalogue] == [
        ("engine_speed", "rpm"), ("state_of_health", "%"), ("engine_dtcs", "")]


@pytest.mark.parametrize(("text", "message"), [
    (request(name="c", bus="can0", service="clear_dtc"), r"refused: clear_dtc \(service 0x14\)"),
    (request(name="w", bus="can0", service="write_did", did=0xF190), "read-only"),
    (request(name="x", bus="can0", service="magic"), "not one of obd_pid"),
    (request(name="x", bus="can9", service="read_dtc"), "not a CAN bus"),
    (request(name="x", bus="can0", service="obd_pid", pid=0x99), "built-in PIDs"),
    (request(name="x", bus="can0", service="read_did", did=0x4444), "catalogue"),
    (request(name="x", bus="can0", service="read_dtc", addressing="functional"),
     "OBD-II PIDs only"),
    (request(name="x", bus="can0", service="obd_pid", pid=0x0C, period=0), "period"),
    (request(name="x", bus="can0", service="obd_pid", pid=0x0C)
     + request(name="y", bus="can0", service="obd_pid", pid=0x0C), "delivers 'engine_speed'"),
])
def test_mistakes_are_named_with_their_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        load(tmp_path, text)
    assert "config.toml:" in str(raised.value)
