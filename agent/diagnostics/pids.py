"""The standard OBD-II mode 01 PIDs (SAE J1979), built in: a request names one by number.

Only PIDs whose formula is `raw * scale + offset` over whole bytes are listed; the others
(bit-packed status PIDs, two-value PIDs) need their own item in a catalogue file.
"""

from __future__ import annotations

from agent.diagnostics.items import DataItem

PIDS: dict[int, DataItem] = {
    0x04: DataItem("engine_load", scale=100 / 255, unit="%"),
    0x05: DataItem("coolant_temperature", offset=-40, unit="°C"),
    0x0B: DataItem("intake_pressure", unit="kPa"),
    0x0C: DataItem("engine_speed", size=2, scale=0.25, unit="rpm"),
    0x0D: DataItem("vehicle_speed", unit="km/h"),
    0x0F: DataItem("intake_temperature", offset=-40, unit="°C"),
    0x10: DataItem("maf_rate", size=2, scale=0.01, unit="g/s"),
    0x11: DataItem("throttle_position", scale=100 / 255, unit="%"),
    0x1F: DataItem("run_time", size=2, unit="s"),
    0x21: DataItem("distance_with_mil", size=2, unit="km"),
    0x2F: DataItem("fuel_level", scale=100 / 255, unit="%"),
    0x31: DataItem("distance_since_clear", size=2, unit="km"),
    0x33: DataItem("barometric_pressure", unit="kPa"),
    0x42: DataItem("module_voltage", size=2, scale=0.001, unit="V"),
    0x46: DataItem("ambient_temperature", offset=-40, unit="°C"),
    0x5B: DataItem("hybrid_battery_remaining", scale=100 / 255, unit="%"),
    0x5C: DataItem("oil_temperature", offset=-40, unit="°C"),
    0xA6: DataItem("odometer", size=4, scale=0.1, unit="km"),
}
