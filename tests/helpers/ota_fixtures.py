"""The local config of the vehicle that the OTA tests and the ota-update fuzz target send
updates to (car-1 in group eu-west, trusting backend.pub)."""

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
