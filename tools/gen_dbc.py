"""Generate dbc/vehicle.dbc, the CAN database of the example electric vehicle.

The database is written as DBC text from the tables below: one function per ECU lists its
messages, signals are packed bit by bit in the order they are listed, and cantools (strict)
must load the result before it is written. The output is byte-for-byte the same on every run,
so the committed file can be checked against a fresh one.

Every signal carries a start value (GenSigStartValue): the value the ECU sends at rest.
tools/simulate sends it for every signal its drive story does not compute.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cantools

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "dbc" / "vehicle.dbc"

MAX_FRAMES_PER_SECOND = 1500
MIN_SIGNALS = 800
MAX_NAME = 32  # longer DBC names need SystemSignalLongSymbol, which many tools ignore

NODES: dict[str, str] = {
    "VCU": "Vehicle control unit: drive state, torque coordination, DC/DC converter, thermal",
    "INV": "Traction inverter and motor (permanent magnet synchronous, single speed gearbox)",
    "BMS": "Battery management system: 96s2p NMC pack, 115 Ah, 40 kWh",
    "CHG": "Charging controller: 11 kW on-board charger and CCS DC charging",
    "ESP": "Electronic stability program: brakes, wheel speeds, parking brake",
    "EPS": "Electric power steering with steering angle sensor",
    "SUS": "Adaptive dampers and ride height sensors",
    "TPMS": "Tire pressure monitoring (direct, one sensor per wheel)",
    "BCM": "Body control module: doors, locks, lights, windows, seats, keyless entry",
    "HVAC": "Climate control: heat pump, PTC heater, electric compressor",
    "ADAS": "Front camera and radar: ACC, lane keeping, emergency braking, park assist",
    "IC": "Instrument cluster: odometer, telltales, settings, clock",
    "DIAG": "Central gateway and diagnostic master: ECU states, DTC summary, J1939 DM1",
}

# Who listens, by sender: written as the signals' receivers.
RECEIVERS: dict[str, tuple[str, ...]] = {
    "VCU": ("INV", "BMS", "CHG", "ESP", "IC", "DIAG"),
    "INV": ("VCU", "DIAG"),
    "BMS": ("VCU", "CHG", "IC", "DIAG"),
    "CHG": ("VCU", "BMS", "IC"),
    "ESP": ("VCU", "EPS", "SUS", "ADAS", "IC"),
    "EPS": ("ESP", "ADAS"),
    "SUS": ("ESP", "BCM", "IC"),
    "TPMS": ("IC", "ESP"),
    "BCM": ("VCU", "IC", "HVAC", "ADAS"),
    "HVAC": ("VCU", "BMS", "IC"),
    "ADAS": ("VCU", "ESP", "EPS", "IC"),
    "IC": ("BCM", "DIAG"),
    "DIAG": ("IC",),
}

CORNERS = ("FL", "FR", "RL", "RR")


@dataclass(frozen=True)
class Field:
    """One signal before it has a place in its frame; an empty name is unused space."""

    name: str
    length: int
    scale: float = 1
    offset: float = 0
    minimum: float | None = None
    maximum: float | None = None
    unit: str = ""
    signed: bool = False
    is_float: bool = False
    choices: tuple[tuple[int, str], ...] = ()
    initial: float = 0
    comment: str = ""

    def raw_bounds(self) -> tuple[int, int]:
        if self.signed:
            return -(1 << (self.length - 1)), (1 << (self.length - 1)) - 1
        return 0, (1 << self.length) - 1

    def bounds(self) -> tuple[float, float]:
        low, high = self.raw_bounds()
        minimum = self.offset + low * self.scale if self.minimum is None else self.minimum
        maximum = self.offset + high * self.scale if self.maximum is None else self.maximum
        return minimum, maximum

    def raw_initial(self) -> float:
        if self.is_float:
            return self.initial
        return round((self.initial - self.offset) / self.scale)


@dataclass(frozen=True)
class Msg:
    frame_id: int
    name: str
    sender: str
    cycle_ms: int
    fields: tuple[Field, ...]
    comment: str
    length: int = 8
    big_endian: bool = False
    extended: bool = False
    fd: bool = False
    alive_counter: bool = False
    checksum: bool = False
    multiplexer: Field | None = None
    pages: tuple[tuple[Field, ...], ...] = ()

    def frames_per_second(self) -> float:
        return 1000 / self.cycle_ms


@dataclass(frozen=True)
class Placed:
    field: Field
    start: int  # DBC start bit: LSB for Intel, MSB (sawtooth numbering) for Motorola
    big_endian: bool
    mux: str = ""  # "", " M" or " m<page>"


# ----------------------------------------------------------------------------------------
# Field builders: the DBC reads best when every line of a table is one signal.

def num(name: str, length: int, scale: float = 1, offset: float = 0, *, lo: float | None = None,
        hi: float | None = None, unit: str = "", signed: bool = False, init: float = 0,
        comment: str = "") -> Field:
    return Field(name, length, scale, offset, lo, hi, unit, signed, initial=init, comment=comment)


def temp(name: str, init: float = 25, *, hi: float = 150, comment: str = "") -> Field:
    """The common 8-bit temperature: 1 degC steps from -40 degC."""
    return Field(name, 8, 1, -40, -40, hi, "degC", initial=init, comment=comment)


def pct(name: str, init: float = 0, comment: str = "") -> Field:
    return Field(name, 7, 1, 0, 0, 100, "%", initial=init, comment=comment)


def flt(name: str, lo: float, hi: float, unit: str, init: float = 0, comment: str = "") -> Field:
    return Field(name, 32, 1, 0, lo, hi, unit, signed=True, is_float=True, initial=init,
                 comment=comment)


def enum(name: str, length: int, labels: Sequence[str] | Mapping[int, str], init: int = 0,
         comment: str = "") -> Field:
    pairs = tuple(labels.items()) if isinstance(labels, Mapping) else tuple(enumerate(labels))
    return Field(name, length, 1, 0, min(k for k, _ in pairs), max(k for k, _ in pairs), "",
                 choices=pairs, initial=init, comment=comment)


def flag(name: str, off: str = "Off", on: str = "On", init: int = 0, comment: str = "") -> Field:
    return enum(name, 1, (off, on), init, comment)


def fault(name: str) -> Field:
    return flag(name, "OK", "Fault")


def gap(bits: int) -> Field:
    return Field("", bits)


def counter(message: str) -> Field:
    return Field(f"{message}_Counter", 4, 1, 0, 0, 15,
                 comment="Alive counter: +1 per frame, wraps from 15 to 0")


def crc(message: str) -> Field:
    return Field(f"{message}_Checksum", 8, 1, 0, 0, 255,
                 comment="CRC-8 SAE J1850 over the low byte of the frame id, then every other "
                         "payload byte in order")


def msg(frame_id: int, name: str, sender: str, cycle_ms: int, fields: Sequence[Field],
        comment: str, **options: Any) -> Msg:
    return Msg(frame_id, name, sender, cycle_ms, tuple(fields), comment, **options)


def per_corner(make: Callable[[str], Field]) -> list[Field]:
    return [make(corner) for corner in CORNERS]


# ----------------------------------------------------------------------------------------
# The vehicle, one function per ECU.

def vcu() -> list[Msg]:
    return [
        msg(0x100, "VCU_TorqueRequest", "VCU", 20, [
            num("TorqueRequest", 16, 0.1, lo=-400, hi=400, unit="Nm", signed=True,
                comment="Motor torque the VCU asks for; negative is regenerative braking"),
            num("TorqueLimitDrive", 12, 0.1, lo=0, hi=400, unit="Nm", init=300),
            num("TorqueLimitRegen", 12, 0.1, lo=0, hi=400, unit="Nm", init=120),
            num("MotorSpeedLimit", 8, 50, lo=0, hi=12000, unit="rpm", init=10500),
            flag("InverterEnable", "Disabled", "Enabled"),
            flag("ActiveDischargeRequest", "Off", "Requested",
                 comment="Discharge the DC link after the contactors open"),
            enum("TorqueMode", 2, ("Standby", "Torque", "Speed")),
        ], "Torque request to the inverter", alive_counter=True, checksum=True),
        msg(0x101, "VCU_Status", "VCU", 50, [
            enum("IgnitionState", 2, ("Off", "Accessory", "On", "Start")),
            enum("Gear", 3, {0: "P", 1: "R", 2: "N", 3: "D", 7: "Invalid"},
                 comment="Selected gear; the motor turns backwards in R"),
            flag("DriveReady", "NotReady", "Ready",
                 comment="High voltage up and the car drives when a gear is selected"),
            enum("DriveMode", 2, ("Eco", "Normal", "Sport"), init=1),
            enum("RegenLevel", 2, ("Off", "Low", "Medium", "High"), init=2),
            flag("BrakePedalPressed", "Released", "Pressed"),
            flag("CreepEnabled", init=1),
            flag("OnePedalMode"),
            num("AcceleratorPedal", 8, 0.4, lo=0, hi=100, unit="%"),
            num("BrakePedalTravel", 8, 0.4, lo=0, hi=100, unit="%"),
            enum("VehicleState", 3, ("Sleep", "Standby", "Ready", "Driving", "Charging", "Fault"),
                 init=1),
            flag("StartButtonPressed", "Released", "Pressed"),
            enum("PowertrainWarning", 2, ("None", "ReducedPower", "StopSafely")),
        ], "Drive state: ignition, gear, pedals", alive_counter=True, checksum=True),
        msg(0x102, "VCU_PowerLimits", "VCU", 100, [
            num("MaxDrivePower", 10, 0.25, lo=0, hi=250, unit="kW", init=110),
            num("MaxRegenPower", 10, 0.25, lo=0, hi=250, unit="kW", init=60),
            num("AuxPowerBudget", 8, 0.1, lo=0, hi=25, unit="kW", init=6),
            flag("DeratingActive"),
            enum("DeratingReason", 3, ("None", "BatteryTemp", "MotorTemp", "InverterTemp",
                                       "LowSOC", "CellVoltage", "Fault")),
            num("PowerLimitFactor", 7, lo=0, hi=100, unit="%", init=100),
        ], "Power the powertrain may use, after derating"),
        msg(0x103, "VCU_DCDC", "VCU", 100, [
            enum("DCDC_State", 3, ("Off", "Standby", "Buck", "Derated", "Fault")),
            num("DCDC_OutputVoltage", 10, 0.02, lo=0, hi=20, unit="V", init=12.6),
            num("DCDC_OutputCurrent", 10, 0.2, lo=0, hi=200, unit="A"),
            num("DCDC_InputVoltage", 10, 0.5, lo=0, hi=500, unit="V"),
            temp("DCDC_Temp", 22, hi=125),
            pct("DCDC_Efficiency", 0),
            num("DCDC_LVBattVoltage", 10, 0.02, lo=0, hi=20, unit="V", init=12.6),
        ], "DC/DC converter feeding the 12 V system from the high-voltage bus"),
        msg(0x104, "VCU_Thermal", "VCU", 500, [
            temp("CoolantTempMotorLoop", 18, hi=120),
            temp("CoolantTempBatteryLoop", 19, hi=80),
            pct("CoolantPumpMotorDuty"),
            pct("CoolantPumpBatteryDuty"),
            pct("RadiatorFanDuty"),
            flag("ChillerValve", "Closed", "Open"),
            enum("ThermalMode", 3, ("Off", "Passive", "ActiveCooling", "Heating",
                                    "Precondition")),
            num("CoolantFlowMotor", 8, 0.1, lo=0, hi=25, unit="l/min"),
            num("CoolantFlowBattery", 8, 0.1, lo=0, hi=25, unit="l/min"),
            flag("BatteryHeaterRequest"),
        ], "Coolant loops for the motor and the battery"),
        msg(0x105, "VCU_Energy", "VCU", 1000, [
            num("TripEnergyUsed", 16, 0.01, lo=0, hi=655, unit="kWh"),
            num("TripEnergyRegen", 16, 0.01, lo=0, hi=655, unit="kWh"),
            num("RangeEstimate", 10, lo=0, hi=1000, unit="km", init=198),
            num("TripConsumptionAvg", 10, 0.1, lo=0, hi=100, unit="kWh/100km", init=16.4),
        ], "Energy used on this trip and the range left"),
        msg(0x106, "VCU_Faults", "VCU", 1000, [
            fault("VCU_FaultPrecharge"),
            fault("VCU_FaultInterlock"),
            fault("VCU_FaultIsolation"),
            flag("VCU_CrashDetected", "NoCrash", "Crash"),
            fault("VCU_FaultPedalPlausibility"),
            fault("VCU_FaultBrakeSwitch"),
            fault("VCU_FaultGearSelector"),
            fault("VCU_TimeoutINV"),
            fault("VCU_TimeoutBMS"),
            fault("VCU_TimeoutESP"),
            fault("VCU_FaultCoolant"),
            fault("VCU_FaultDCDC"),
            fault("VCU_Fault12VLow"),
            flag("VCU_HVILClosed", "Open", "Closed", init=1,
                 comment="High-voltage interlock loop through every HV connector"),
            gap(2),
            num("VCU_FaultCount", 8, lo=0, hi=255),
            num("VCU_LastFaultCode", 16, lo=0, hi=65535, unit=""),
        ], "Latched VCU faults"),
    ]


def inverter() -> list[Msg]:
    return [
        msg(0x0A0, "INV_Motor", "INV", 20, [
            flt("MotorTorque", -400, 400, "Nm",
                comment="Shaft torque estimate, IEEE 754 single; negative when regenerating"),
            num("MotorSpeed", 16, lo=-15000, hi=15000, unit="rpm", signed=True,
                comment="Rotor speed; negative in reverse"),
            enum("RotationDirection", 2, ("Standstill", "Forward", "Reverse")),
        ], "Motor torque and speed", alive_counter=True, checksum=True),
        msg(0x0A1, "INV_Electrical", "INV", 100, [
            flt("MotorCurrentD", -600, 600, "A", comment="d-axis current, negative in field "
                                                          "weakening"),
            flt("MotorCurrentQ", -600, 600, "A", comment="q-axis (torque producing) current"),
        ], "Field oriented control currents"),
        msg(0x0A2, "INV_Status", "INV", 100, [
            enum("InverterState", 3, ("Off", "Precharge", "Standby", "Running", "Discharge",
                                      "Fault")),
            num("DCBusVoltage", 12, 0.125, lo=0, hi=500, unit="V"),
            num("DCBusCurrent", 12, 0.5, lo=-1000, hi=1000, unit="A", signed=True),
            num("PhaseCurrentRms", 11, 0.5, lo=0, hi=1000, unit="A"),
            num("ModulationIndex", 7, 0.01, lo=0, hi=1.2, unit=""),
            flag("PowerStageEnabled", "Disabled", "Enabled"),
            flag("ActiveDischarge"),
        ], "Inverter state and DC link", alive_counter=True),
        msg(0x0A3, "INV_Limits", "INV", 100, [
            num("MaxMotorTorque", 12, 0.1, lo=0, hi=400, unit="Nm", init=300),
            num("MinMotorTorque", 12, 0.1, lo=-400, hi=0, unit="Nm", signed=True, init=-120),
            num("MaxMotorSpeed", 8, 50, lo=0, hi=12000, unit="rpm", init=10500),
            num("TorqueDerating", 7, lo=0, hi=100, unit="%"),
            enum("TorqueLimitReason", 3, ("None", "DCBusVoltage", "Temperature", "Speed",
                                          "BatteryLimit", "Fault")),
        ], "Torque the inverter can deliver now"),
        msg(0x0A4, "INV_Temps", "INV", 500, [
            temp("IGBTTemp_U", 24, hi=175),
            temp("IGBTTemp_V", 24, hi=175),
            temp("IGBTTemp_W", 25, hi=175),
            temp("StatorTemp", 22, hi=180),
            temp("RotorTempEstimate", 21, hi=180),
            temp("InverterCoolantInlet", 18, hi=120),
            temp("GateDriverTemp", 26, hi=150),
            temp("DCLinkCapacitorTemp", 23, hi=125),
        ], "Power stage and motor temperatures"),
        msg(0x0A5, "INV_Faults", "INV", 1000, [
            fault("INV_FaultOvercurrent"),
            fault("INV_FaultOvervoltage"),
            fault("INV_FaultUndervoltage"),
            fault("INV_FaultOvertemp"),
            fault("INV_FaultResolver"),
            fault("INV_FaultGateDriver"),
            fault("INV_FaultPhaseLoss"),
            fault("INV_FaultDesatU"),
            fault("INV_FaultDesatV"),
            fault("INV_FaultDesatW"),
            fault("INV_FaultCANTimeout"),
            flag("INV_SafeState", "Normal", "ActiveShortCircuit"),
            gap(4),
            num("INV_FaultCode", 16, lo=0, hi=65535),
            num("INV_FaultCount", 8, lo=0, hi=255),
        ], "Latched inverter faults"),
    ]


CELLS = 96
CELLS_PER_PAGE = 4
MODULES = 24
SENSORS_PER_MODULE = 3


def battery() -> list[Msg]:
    cell_pages = tuple(
        tuple(num(f"CellVoltage_{cell:02d}", 13, lo=0, hi=5000, unit="mV", init=3800)
              for cell in range(page * CELLS_PER_PAGE + 1, (page + 1) * CELLS_PER_PAGE + 1))
        for page in range(CELLS // CELLS_PER_PAGE))
    temp_pages = tuple(
        tuple(num(f"ModuleTemp_{module:02d}_{sensor}", 12, 0.1, lo=-40, hi=120, unit="degC",
                  signed=True, init=20)
              for sensor in range(1, SENSORS_PER_MODULE + 1))
        for module in range(1, MODULES + 1))
    contactor = ("Open", "Closed", "Welded", "Fault")
    return [
        msg(0x1DB, "BMS_Pack", "BMS", 50, [
            num("PackVoltage", 16, 0.01, lo=0, hi=500, unit="V", init=367),
            num("PackCurrent", 16, 0.1, lo=-1000, hi=1000, unit="A", signed=True,
                comment="Positive discharging, negative charging"),
            num("SOC", 10, 0.1, lo=0, hi=100, unit="%", init=62,
                comment="State of charge, usable window"),
            num("SOH", 8, 0.5, lo=0, hi=100, unit="%", init=91.5,
                comment="State of health: capacity now over capacity new"),
        ], "Pack voltage, current and state of charge", alive_counter=True, checksum=True),
        msg(0x1DC, "BMS_Limits", "BMS", 100, [
            num("MaxDischargeCurrent", 12, 0.25, lo=0, hi=1000, unit="A", init=400),
            num("MaxChargeCurrent", 12, 0.25, lo=0, hi=1000, unit="A", init=250),
            num("MaxDischargePower", 10, 0.25, lo=0, hi=250, unit="kW", init=110),
            num("MaxChargePower", 10, 0.25, lo=0, hi=250, unit="kW", init=60),
            num("MaxCellVoltageLimit", 8, 0.01, 2.5, lo=2.5, hi=5, unit="V", init=4.2),
            num("MinCellVoltageLimit", 8, 0.01, 2.0, lo=2, hi=4.5, unit="V", init=2.8),
        ], "Current and power the pack accepts now", alive_counter=True),
        msg(0x1DD, "BMS_Status", "BMS", 100, [
            enum("BMS_State", 3, ("Init", "Standby", "Precharge", "Drive", "Charge",
                                  "Balancing", "Fault", "Shutdown"), init=1),
            enum("ContactorPositive", 2, contactor),
            enum("ContactorNegative", 2, contactor),
            enum("PrechargeRelay", 2, contactor),
            num("IsolationResistance", 12, 2, lo=0, hi=8000, unit="kOhm", init=5000),
            flag("BalancingActive"),
            num("BalancingCellCount", 7, lo=0, hi=96, unit=""),
            flag("BatteryHeaterActive"),
            enum("BatteryCoolingRequest", 2, ("None", "Low", "High")),
            flag("BMS_InterlockClosed", "Open", "Closed", init=1),
            flag("ThermalEventWarning", "None", "Warning"),
        ], "Contactors, isolation and balancing", alive_counter=True),
        msg(0x1DE, "BMS_CellStats", "BMS", 200, [
            num("MaxCellVoltage", 13, lo=0, hi=5000, unit="mV", init=3805),
            num("MinCellVoltage", 13, lo=0, hi=5000, unit="mV", init=3795),
            num("MaxCellVoltageId", 7, lo=0, hi=96, init=1),
            num("MinCellVoltageId", 7, lo=0, hi=96, init=1),
            num("CellVoltageDelta", 8, lo=0, hi=255, unit="mV", init=10),
            temp("MaxModuleTemp", 21, hi=120),
            temp("MinModuleTemp", 19, hi=120),
        ], "Extremes over all cells and temperature sensors"),
        msg(0x1F0, "BMS_CellVoltages", "BMS", 20, [],
            "Cell voltages, four cells per page; the pages cycle, one page per frame",
            alive_counter=True,
            multiplexer=num("CellGroup", 8, lo=0, hi=CELLS // CELLS_PER_PAGE - 1,
                            comment="Page n carries cells 4n+1 to 4n+4"),
            pages=cell_pages),
        msg(0x1F1, "BMS_CellTemps", "BMS", 50, [],
            "Module temperatures, one module (three sensors) per page",
            multiplexer=num("TempModule", 8, lo=0, hi=MODULES - 1,
                            comment="Page n carries module n+1"),
            pages=temp_pages),
        msg(0x5B0, "BMS_Energy", "BMS", 1000, [
            num("RemainingEnergy", 16, 0.01, lo=0, hi=100, unit="kWh", init=22.8),
            num("FullCapacityEnergy", 16, 0.01, lo=0, hi=100, unit="kWh", init=36.8),
            num("NominalCapacity", 12, 0.1, lo=0, hi=400, unit="Ah", init=115),
            num("CycleCount", 16, lo=0, hi=65535, init=412),
        ], "Energy content of the pack", big_endian=True),
        msg(0x5B1, "BMS_Lifetime", "BMS", 1000, [
            num("TotalChargedEnergy", 32, 0.1, lo=0, hi=1000000, unit="kWh", init=18544.2),
            num("TotalDischargedEnergy", 32, 0.1, lo=0, hi=1000000, unit="kWh",
                init=17421.9),
        ], "Lifetime energy throughput", big_endian=True),
        msg(0x5B2, "BMS_Insulation", "BMS", 1000, [
            num("IsolationResistancePos", 16, lo=0, hi=50000, unit="kOhm", init=12400),
            num("IsolationResistanceNeg", 16, lo=0, hi=50000, unit="kOhm", init=11800),
            enum("IsolationState", 3, ("Unknown", "OK", "Warning", "Fault", "Measuring"),
                 init=1),
        ], "Insulation monitoring of the HV bus against the chassis"),
        msg(0x5B3, "BMS_Faults", "BMS", 1000, [
            fault("BMS_FaultCellOvervoltage"),
            fault("BMS_FaultCellUndervoltage"),
            fault("BMS_FaultCellOvertemp"),
            fault("BMS_FaultCellUndertemp"),
            fault("BMS_FaultOvercurrent"),
            fault("BMS_FaultCellImbalance"),
            fault("BMS_FaultContactorWelded"),
            fault("BMS_FaultIsolationLow"),
            fault("BMS_FaultThermalRunaway"),
            fault("BMS_FaultTempSensor"),
            fault("BMS_FaultVoltageSense"),
            fault("BMS_FaultComm"),
            gap(4),
            num("BMS_FaultCode", 16, lo=0, hi=65535),
            num("BMS_FaultCount", 8, lo=0, hi=255),
        ], "Latched battery faults"),
    ]


def charger() -> list[Msg]:
    return [
        msg(0x390, "CHG_Status", "CHG", 100, [
            enum("ChargingState", 3, ("NotConnected", "Connected", "Charging", "Complete",
                                      "Fault")),
            num("ChargePower", 12, 0.1, lo=0, hi=350, unit="kW",
                comment="Power into the pack while charging"),
            enum("ChargerType", 3, ("None", "AC1Phase", "AC3Phase", "DC_CCS", "DC_CHAdeMO")),
            flag("PlugLocked", "Unlocked", "Locked"),
            flag("ChargePortDoor", "Closed", "Open"),
            num("TimeToFull", 11, lo=0, hi=2000, unit="min"),
            num("ChargeTargetSOC", 7, lo=0, hi=100, unit="%", init=80),
        ], "Charging session state", alive_counter=True),
        msg(0x391, "CHG_AC", "CHG", 200, [
            num("ACVoltage_L1", 9, lo=0, hi=500, unit="V"),
            num("ACVoltage_L2", 9, lo=0, hi=500, unit="V"),
            num("ACVoltage_L3", 9, lo=0, hi=500, unit="V"),
            num("ACCurrent_L1", 7, 0.5, lo=0, hi=63, unit="A"),
            num("ACCurrent_L2", 7, 0.5, lo=0, hi=63, unit="A"),
            num("ACCurrent_L3", 7, 0.5, lo=0, hi=63, unit="A"),
            num("PilotDutyCycle", 7, lo=0, hi=100, unit="%"),
            enum("ProximityState", 3, ("NotConnected", "Cable13A", "Cable20A", "Cable32A",
                                       "Cable63A", "ButtonPressed")),
        ], "AC inlet: mains voltage and current per phase, IEC 61851 pilot and proximity"),
        msg(0x392, "CHG_DC", "CHG", 200, [
            num("DCChargeVoltage", 12, 0.125, lo=0, hi=500, unit="V"),
            num("DCChargeCurrent", 12, 0.25, lo=0, hi=1000, unit="A"),
            num("EVSEMaxVoltage", 10, lo=0, hi=1000, unit="V"),
            num("EVSEMaxCurrent", 10, lo=0, hi=1000, unit="A"),
            num("EVSEMaxPower", 9, lo=0, hi=500, unit="kW"),
            enum("DCChargeState", 4, ("Idle", "Handshake", "CableCheck", "Precharge",
                                      "Charging", "Stopping", "Finished", "Fault")),
            enum("EVSEIsolationStatus", 3, ("Invalid", "Valid", "Warning", "Fault", "NoIMD")),
        ], "DC charging (ISO 15118): what the station offers and delivers"),
        msg(0x393, "CHG_OBC", "CHG", 500, [
            enum("OBC_State", 3, ("Off", "Standby", "Charging", "Derated", "Fault")),
            num("OBC_OutputVoltage", 10, 0.5, lo=0, hi=500, unit="V"),
            num("OBC_OutputCurrent", 9, 0.1, lo=0, hi=50, unit="A"),
            temp("OBC_Temp", 20, hi=125),
            pct("OBC_Efficiency"),
            num("OBC_InputPower", 8, 0.1, lo=0, hi=25, unit="kW"),
            num("OBC_FaultCode", 8, lo=0, hi=255),
        ], "On-board charger for AC charging"),
        msg(0x394, "CHG_Schedule", "CHG", 1000, [
            flag("ScheduledChargingEnabled", init=1),
            num("ScheduledStartHour", 5, lo=0, hi=23, unit="h", init=23),
            num("ScheduledStartMinute", 6, lo=0, hi=59, unit="min", init=30),
            num("DepartureHour", 5, lo=0, hi=23, unit="h", init=7),
            num("DepartureMinute", 6, lo=0, hi=59, unit="min", init=15),
            flag("PreconditionAtDeparture", init=1),
            num("ACChargeCurrentLimit", 6, lo=0, hi=63, unit="A", init=32),
            flag("OffPeakOnly"),
        ], "Charge schedule set by the driver"),
    ]


def chassis() -> list[Msg]:
    direction = ("Standstill", "Forward", "Reverse", "Invalid")
    return [
        msg(0x180, "EPS_SteeringAngle", "EPS", 20, [
            num("SteeringWheelAngle", 16, 0.1, lo=-780, hi=780, unit="deg", signed=True,
                comment="Positive to the left"),
            num("SteeringWheelSpeed", 12, lo=-1000, hi=1000, unit="deg/s", signed=True),
            flag("SAS_Calibrated", "NotCalibrated", "Calibrated", init=1),
            flag("SAS_Valid", "Invalid", "Valid", init=1),
        ], "Steering angle sensor", big_endian=True, alive_counter=True, checksum=True),
        msg(0x181, "EPS_Status", "EPS", 50, [
            num("DriverTorque", 12, 0.01, lo=-20, hi=20, unit="Nm", signed=True),
            num("AssistTorque", 12, 0.05, lo=-100, hi=100, unit="Nm", signed=True),
            num("EPS_MotorCurrent", 10, 0.2, lo=0, hi=200, unit="A"),
            enum("EPS_State", 3, ("Off", "Init", "Ready", "Active", "Degraded", "Fault")),
            temp("EPS_Temp", 22, hi=125),
            flag("LKA_TorqueAccepted", "Rejected", "Accepted"),
            flag("HandsOnDetected", "HandsOff", "HandsOn"),
        ], "Power steering assist", alive_counter=True),
        msg(0x1A0, "ESP_WheelSpeeds", "ESP", 20, [
            *per_corner(lambda c: num(f"WheelSpeed_{c}", 14, 0.02, lo=0, hi=300,
                                      unit="km/h")),
        ], "Wheel speeds from the ABS sensors", alive_counter=True),
        msg(0x1A1, "ESP_VehicleSpeed", "ESP", 20, [
            num("VehicleSpeed", 16, 0.01, lo=0, hi=300, unit="km/h",
                comment="Reference speed over ground from the four wheel speeds"),
            flag("VehicleSpeedValid", "Invalid", "Valid", init=1),
            enum("DirectionOfTravel", 2, direction),
            flag("VehicleStandstill", "Moving", "Standstill", init=1),
        ], "Vehicle speed", alive_counter=True, checksum=True),
        msg(0x1A2, "ESP_Dynamics", "ESP", 20, [
            num("YawRate", 16, 0.01, lo=-150, hi=150, unit="deg/s", signed=True,
                comment="Positive turning left"),
            num("LateralAccel", 12, 0.01, lo=-20, hi=20, unit="m/s2", signed=True),
            num("LongitudinalAccel", 12, 0.01, lo=-20, hi=20, unit="m/s2", signed=True),
        ], "Inertial sensor cluster", alive_counter=True, checksum=True),
        msg(0x1A3, "ESP_Brake", "ESP", 20, [
            num("BrakePressure", 12, 0.1, lo=0, hi=250, unit="bar",
                comment="Master cylinder pressure"),
            num("FrictionBrakeTorque", 12, 2, lo=0, hi=8000, unit="Nm",
                comment="Sum over the four wheels"),
            num("RegenTorqueAllowed", 10, 0.5, lo=0, hi=400, unit="Nm", init=120),
            flag("BrakeLightRequest"),
            flag("ABSActive", "Inactive", "Active"),
            flag("ESCActive", "Inactive", "Active"),
            flag("TCSActive", "Inactive", "Active"),
            flag("HillHoldActive", "Inactive", "Active"),
            flag("AutoHoldActive", "Inactive", "Active"),
        ], "Brake system: pressure, blending with regeneration, interventions",
            alive_counter=True, checksum=True),
        msg(0x1A4, "ESP_WheelPulses", "ESP", 50, [
            *per_corner(lambda c: num(f"WheelPulse_{c}", 8, lo=0, hi=255,
                                      comment="Sensor ring edges (48 per turn), rolling")),
            *per_corner(lambda c: enum(f"WheelDirection_{c}", 2, direction)),
        ], "Wheel pulse counters for odometry and parking"),
        msg(0x1A5, "ESP_Status", "ESP", 100, [
            flag("ESCOffSwitch", "Normal", "Off"),
            fault("ABSFault"),
            fault("ESCFault"),
            fault("EBDFault"),
            flag("BrakeFluidLow", "OK", "Low"),
            flag("BrakePadWearFront", "OK", "Worn"),
            flag("BrakePadWearRear", "OK", "Worn"),
            enum("TCSMode", 2, ("Normal", "Sport", "Off")),
            flag("HillDescentActive", "Inactive", "Active"),
            num("BrakeDiscTempFront", 10, 1, -40, lo=-40, hi=800, unit="degC", init=24),
            num("BrakeDiscTempRear", 10, 1, -40, lo=-40, hi=800, unit="degC", init=22),
        ], "Brake system health and driver settings", alive_counter=True),
        msg(0x1A6, "EPB_Status", "ESP", 100, [
            enum("ParkingBrakeState", 3, ("Released", "Applied", "Applying", "Releasing",
                                          "Fault", "Unknown"), init=1),
            enum("ParkingBrakeSwitch", 2, ("Neutral", "Apply", "Release")),
            num("ParkingBrakeForce", 8, 0.1, lo=0, hi=25, unit="kN", init=16),
            flag("EPB_WarningLamp"),
            flag("EPB_AutoApply", init=1),
        ], "Electric parking brake", alive_counter=True),
    ]


def suspension() -> list[Msg]:
    sensor = ("OK", "OutOfRange", "Fault", "NotCalibrated")
    return [
        msg(0x2A0, "SUS_Height", "SUS", 50, [
            *per_corner(lambda c: num(
                f"SuspHeight_{c}", 16, 0.1, lo=-150, hi=150, unit="mm", signed=True,
                comment="Body height at the wheel relative to nominal ride height; negative "
                        "is lower (compressed)")),
        ], "Ride height per corner", big_endian=True),
        msg(0x2A1, "SUS_Damping", "SUS", 100, [
            *per_corner(lambda c: num(f"DamperCurrent_{c}", 10, 2, lo=0, hi=2000, unit="mA",
                                      init=800)),
            enum("DampingMode", 2, ("Comfort", "Normal", "Sport", "Individual"), init=1),
            enum("SUS_ActuatorState", 2, ("Off", "Active", "Degraded", "Fault")),
        ], "Damper valve currents", alive_counter=True),
        msg(0x2A2, "SUS_Accel", "SUS", 100, [
            num("BodyAccel_FL", 12, 0.01, lo=-20, hi=20, unit="m/s2", signed=True),
            num("BodyAccel_FR", 12, 0.01, lo=-20, hi=20, unit="m/s2", signed=True),
            num("BodyAccel_RL", 12, 0.01, lo=-20, hi=20, unit="m/s2", signed=True),
            num("PitchAngle", 10, 0.05, lo=-10, hi=10, unit="deg", signed=True,
                comment="Positive nose up"),
            num("RollAngle", 10, 0.05, lo=-10, hi=10, unit="deg", signed=True,
                comment="Positive right side down"),
        ], "Vertical body acceleration and body attitude"),
        msg(0x2A3, "SUS_Status", "SUS", 200, [
            *per_corner(lambda c: enum(f"HeightSensorState_{c}", 2, sensor)),
            *per_corner(lambda c: fault(f"DamperFault_{c}")),
            num("HeadlightLevelingAngle", 8, 0.05, lo=-5, hi=5, unit="deg", signed=True),
            num("VehicleLoadEstimate", 10, lo=0, hi=1000, unit="kg", init=75,
                comment="Payload including occupants, from the ride heights"),
        ], "Height sensor health and load estimate"),
    ]


def tpms() -> list[Msg]:
    return [
        msg(0x385, "TPMS_Status", "TPMS", 1000, [
            *per_corner(lambda c: num(f"TirePressure_{c}", 9, lo=0, hi=500, unit="kPa",
                                      init=250, comment="Gauge pressure")),
            *per_corner(lambda c: num(f"TireTemp_{c}", 7, 1, -40, lo=-40, hi=87, unit="degC",
                                      init=15)),
        ], "Pressure and temperature of each tire"),
        msg(0x386, "TPMS_Sensors", "TPMS", 1000, [
            *per_corner(lambda c: enum(f"TPMS_SensorState_{c}", 2,
                                       ("OK", "NoSignal", "Fault", "NotLearned"))),
            *per_corner(lambda c: enum(f"TireWarning_{c}", 2,
                                       ("None", "LowPressure", "HighTemp", "RapidLoss"))),
            *per_corner(lambda c: flag(f"SensorBatteryLow_{c}", "OK", "Low")),
            enum("TPMS_SystemState", 2, ("Off", "Learning", "Active", "Fault"), init=2),
            num("RecommendedPressureFront", 9, lo=0, hi=500, unit="kPa", init=250),
            num("RecommendedPressureRear", 9, lo=0, hi=500, unit="kPa", init=250),
        ], "Tire sensor health and warnings"),
    ]


def body() -> list[Msg]:
    motion = ("Stopped", "Up", "Down", "Blocked")
    heat = ("Off", "Low", "Medium", "High")
    return [
        msg(0x350, "BCM_Doors", "BCM", 100, [
            *per_corner(lambda c: flag(f"DoorOpen_{c}", "Closed", "Open")),
            flag("TrunkOpen", "Closed", "Open"),
            flag("HoodOpen", "Closed", "Open"),
            *per_corner(lambda c: flag(f"DoorLocked_{c}", "Unlocked", "Locked", init=1)),
            flag("ChildLock_RL", init=1),
            flag("ChildLock_RR", init=1),
            enum("CentralLockState", 2, ("Unlocked", "Locked", "DoubleLocked", "Unknown"),
                 init=1),
            enum("TrunkLatch", 2, ("Latched", "Unlatched", "Moving")),
            pct("TrunkPosition", comment="Power tailgate opening, 0 closed"),
        ], "Doors, locks and tailgate", alive_counter=True),
        msg(0x351, "BCM_Lights", "BCM", 100, [
            enum("HeadlightSwitch", 2, ("Off", "Auto", "Parking", "LowBeam"), init=1),
            flag("LowBeam"),
            flag("HighBeam"),
            flag("ParkingLights"),
            flag("DaytimeRunningLights"),
            flag("FogLightsFront"),
            flag("FogLightRear"),
            flag("TurnSignalLeft"),
            flag("TurnSignalRight"),
            flag("HazardLights"),
            flag("BrakeLights"),
            flag("ReverseLights"),
            flag("InteriorLight"),
            flag("AutoHighBeamActive", "Inactive", "Active"),
            num("AmbientLightLevel", 10, 100, lo=0, hi=100000, unit="lx", init=32000),
            pct("DashDimming", 80),
        ], "Exterior and interior lights"),
        msg(0x352, "BCM_Windows", "BCM", 200, [
            *per_corner(lambda c: pct(f"WindowPosition_{c}", comment="0 closed, 100 open")),
            *per_corner(lambda c: enum(f"WindowMotion_{c}", 2, motion)),
            pct("SunroofPosition"),
            flag("SunroofTilted"),
            flag("WindowLockout"),
        ], "Windows and sunroof"),
        msg(0x353, "BCM_Wipers", "BCM", 200, [
            enum("WiperMode", 3, ("Off", "Interval", "Low", "High", "Auto", "Single"), init=4),
            num("WiperInterval", 3, lo=0, hi=7, init=3),
            pct("RainIntensity"),
            flag("WasherActive"),
            enum("RearWiperMode", 2, ("Off", "Interval", "On")),
            pct("WasherFluidLevel", 65),
        ], "Wipers, washer and rain sensor"),
        msg(0x354, "BCM_Seats", "BCM", 500, [
            *(flag(f"SeatOccupied_{s}", "Empty", "Occupied") for s in
              ("FL", "FR", "RL", "RM", "RR")),
            *(flag(f"SeatbeltFastened_{s}", "Unfastened", "Fastened") for s in
              ("FL", "FR", "RL", "RM", "RR")),
            enum("OccupantClass_FR", 2, ("Empty", "Child", "Adult", "Unknown"),
                 comment="Passenger airbag suppression input"),
            enum("SeatHeat_FL", 2, heat),
            enum("SeatHeat_FR", 2, heat),
            enum("SeatVent_FL", 2, heat),
            enum("SeatVent_FR", 2, heat),
            pct("DriverSeatPosition", 46, comment="Fore-aft travel, 0 fully forward"),
            num("DriverSeatBackAngle", 7, 0.5, lo=0, hi=60, unit="deg", init=24),
            enum("SeatMemory", 2, ("None", "Memory1", "Memory2", "Memory3"), init=1),
        ], "Seat occupancy, belts and comfort"),
        msg(0x355, "BCM_Keyless", "BCM", 500, [
            flag("KeyPresent", "Absent", "Present"),
            enum("KeyLocation", 3, ("None", "Cabin", "Trunk", "DriverSide", "PassengerSide",
                                    "Rear")),
            flag("KeyBatteryLow", "OK", "Low"),
            enum("RemoteCommand", 3, ("None", "Lock", "Unlock", "TrunkOpen", "Panic",
                                      "Climate")),
            enum("AlarmState", 2, ("Disarmed", "Armed", "Triggered", "Arming"), init=1),
            enum("ImmobilizerState", 2, ("Locked", "Authenticated", "Fault")),
            num("KeyId", 4, lo=0, hi=15, init=1),
            flag("WelcomeLight"),
        ], "Keyless entry, alarm and immobilizer"),
        msg(0x356, "BCM_Power", "BCM", 1000, [
            num("BCM_BatteryVoltage", 10, 0.02, lo=0, hi=20, unit="V", init=12.6),
            num("BCM_BatteryCurrent", 12, 0.1, lo=-200, hi=200, unit="A", signed=True,
                init=-1.2, comment="Positive charging the 12 V battery"),
            temp("BCM_BatteryTemp", 16, hi=100),
            flag("LowPowerMode"),
            enum("LoadShedLevel", 2, ("None", "Comfort", "Convenience", "Critical")),
            pct("BatterySOC12V", 88),
            num("SleepCountdown", 8, lo=0, hi=255, unit="s"),
        ], "12 V system as the body controller sees it"),
    ]


def climate() -> list[Msg]:
    return [
        msg(0x3E0, "HVAC_Status", "HVAC", 200, [
            num("CabinTemp", 12, 0.1, lo=-40, hi=85, unit="degC", signed=True, init=17),
            num("OutsideTemp", 10, 0.1, -40, lo=-40, hi=60, unit="degC", init=16),
            num("SetpointDriver", 6, 0.5, 15, lo=15, hi=32, unit="degC", init=21),
            num("SetpointPassenger", 6, 0.5, 15, lo=15, hi=32, unit="degC", init=21),
            num("FanSpeed", 4, lo=0, hi=10),
            flag("ACOn"),
            enum("RecircMode", 2, ("Fresh", "Recirculate", "Auto"), init=2),
            enum("AirDistribution", 3, ("Face", "FaceFeet", "Feet", "FeetDefrost", "Defrost",
                                        "Auto"), init=5),
            flag("DefrostFront"),
            flag("DefrostRear"),
            flag("ClimateAuto", init=1),
            flag("ClimateSync", init=1),
            flag("ClimateOn"),
        ], "Cabin climate and driver settings"),
        msg(0x3E1, "HVAC_Compressor", "HVAC", 200, [
            num("CompressorSpeed", 8, 50, lo=0, hi=10000, unit="rpm"),
            num("CompressorPower", 8, 50, lo=0, hi=7000, unit="W"),
            enum("CompressorState", 3, ("Off", "Starting", "Running", "Limited", "Fault")),
            num("RefrigerantPressureHigh", 8, 0.1, lo=0, hi=25, unit="bar", init=6.2),
            num("RefrigerantPressureLow", 8, 0.05, lo=0, hi=12, unit="bar", init=5.9),
            num("EvaporatorTemp", 8, 0.5, -40, lo=-40, hi=80, unit="degC", init=16),
            temp("CompressorDischargeTemp", 17, hi=150),
            pct("ExpansionValvePosition"),
        ], "Electric refrigerant compressor"),
        msg(0x3E2, "HVAC_Heater", "HVAC", 500, [
            num("PTCHeaterPower", 8, 40, lo=0, hi=7000, unit="W"),
            enum("HeatPumpMode", 3, ("Off", "Heating", "Cooling", "Dehumidify", "Defrost",
                                     "Chiller")),
            temp("HeaterCoolantTemp", 17, hi=100),
            flag("SteeringWheelHeat"),
            num("BlowerPower", 8, 2, lo=0, hi=500, unit="W"),
            num("BlowerSpeed", 8, 20, lo=0, hi=5000, unit="rpm"),
        ], "Heat pump, PTC heater and blower"),
        msg(0x3E3, "HVAC_Sensors", "HVAC", 1000, [
            pct("CabinHumidity", 58),
            num("CO2Level", 8, 20, lo=0, hi=5000, unit="ppm", init=520),
            num("SunLoad", 8, 5, lo=0, hi=1200, unit="W/m2", init=310),
            enum("AirQuality", 2, ("Good", "Moderate", "Poor", "VeryPoor")),
            num("PM25", 8, lo=0, hi=255, unit="ug/m3", init=9),
            num("DuctTempVentLeft", 8, 0.5, -40, lo=-40, hi=80, unit="degC", init=17),
            num("DuctTempVentRight", 8, 0.5, -40, lo=-40, hi=80, unit="degC", init=17),
            num("DuctTempFoot", 8, 0.5, -40, lo=-40, hi=80, unit="degC", init=17),
        ], "Cabin air sensors"),
        msg(0x3E4, "HVAC_Preconditioning", "HVAC", 1000, [
            flag("PreconditionActive"),
            num("PreconditionTarget", 6, 0.5, 15, lo=15, hi=32, unit="degC", init=21),
            num("PreconditionTimeLeft", 8, lo=0, hi=255, unit="min"),
            enum("CabinOverheatProtection", 2, ("Off", "FanOnly", "AC"), init=1),
            flag("BatteryPreconditionActive"),
            enum("PreconditionSource", 2, ("None", "App", "Schedule", "Navigation")),
        ], "Cabin and battery preconditioning"),
    ]


ADAS_OBJECTS = 10


def adas() -> list[Msg]:
    objects: list[Field] = []
    for index in range(1, ADAS_OBJECTS + 1):
        prefix = f"Obj{index:02d}"
        objects += [
            num(f"{prefix}_Distance", 12, 0.05, lo=0, hi=200, unit="m",
                comment="Longitudinal distance from the front bumper"),
            num(f"{prefix}_RelVelocity", 12, 0.05, lo=-100, hi=100, unit="m/s", signed=True,
                comment="Positive moving away"),
            num(f"{prefix}_LateralPos", 10, 0.05, lo=-25, hi=25, unit="m", signed=True,
                comment="Positive to the left"),
            enum(f"{prefix}_Class", 4, ("None", "Car", "Truck", "Motorcycle", "Bicycle",
                                        "Pedestrian", "Animal", "Unknown")),
            num(f"{prefix}_ExistProb", 7, lo=0, hi=100, unit="%"),
            enum(f"{prefix}_Motion", 3, ("Unknown", "Moving", "Stationary", "Stopped",
                                         "Oncoming", "Crossing")),
        ]
    lane = ("None", "Dashed", "Solid", "DoubleSolid", "RoadEdge", "BottsDots")
    side = ("None", "Detected", "Warning")
    sensor = ("Init", "OK", "Blocked", "Calibrating", "Fault")
    return [
        msg(0x2C0, "ADAS_ACC", "ADAS", 50, [
            enum("ACC_State", 3, ("Off", "Standby", "Active", "Override", "Fault",
                                  "StandstillHold")),
            num("ACC_SetSpeed", 8, lo=0, hi=250, unit="km/h"),
            enum("ACC_TimeGap", 2, ("Gap1", "Gap2", "Gap3", "Gap4"), init=2),
            flag("ACC_TargetDetected", "NoTarget", "Target"),
            num("ACC_TargetDistance", 10, 0.25, lo=0, hi=250, unit="m"),
            num("ACC_TargetSpeed", 10, 0.25, lo=0, hi=250, unit="km/h"),
            num("ACC_AccelRequest", 10, 0.01, lo=-5, hi=3, unit="m/s2", signed=True),
        ], "Adaptive cruise control", alive_counter=True, checksum=True),
        msg(0x2C1, "ADAS_AEB", "ADAS", 50, [
            enum("AEB_State", 3, ("Off", "Standby", "Armed", "Prefill", "PartialBraking",
                                  "FullBraking", "Fault"), init=1),
            enum("FCW_Warning", 2, ("Off", "Level1", "Level2", "Imminent")),
            num("AEB_DecelRequest", 10, 0.01, lo=0, hi=10, unit="m/s2"),
            num("TimeToCollision", 8, 0.1, lo=0, hi=25, unit="s", init=25,
                comment="25 s when nothing is ahead"),
            enum("AEB_Sensitivity", 2, ("Early", "Normal", "Late"), init=1),
            flag("PedestrianDetected", "No", "Yes"),
        ], "Forward collision warning and emergency braking", alive_counter=True,
            checksum=True),
        msg(0x2C2, "ADAS_LKA", "ADAS", 50, [
            enum("LKA_State", 3, ("Off", "Standby", "Active", "Intervening", "Fault",
                                  "Unavailable"), init=1),
            enum("LaneDepartureWarning", 2, ("None", "Left", "Right")),
            num("LKA_TorqueRequest", 10, 0.01, lo=-3, hi=3, unit="Nm", signed=True),
            flag("LaneLeftDetected", "No", "Yes"),
            flag("LaneRightDetected", "No", "Yes"),
            enum("LaneLeftType", 3, lane),
            enum("LaneRightType", 3, lane),
            num("LaneOffset", 10, 0.01, lo=-2.5, hi=2.5, unit="m", signed=True,
                comment="Vehicle centre from lane centre, positive to the left"),
            num("LaneWidth", 8, 0.02, lo=0, hi=5, unit="m"),
            num("LaneCurvature", 10, 0.01, lo=-5, hi=5, unit="1/km", signed=True),
        ], "Lane detection and lane keeping", alive_counter=True, checksum=True),
        msg(0x2C3, "ADAS_ObjectList", "ADAS", 100, [
            num("ObjectCount", 8, lo=0, hi=ADAS_OBJECTS),
            *objects,
        ], "Fused radar and camera objects (CAN FD, 64 bytes)", length=64, fd=True,
            alive_counter=True, checksum=True),
        msg(0x2C4, "ADAS_ParkAssist", "ADAS", 100, [
            *(num(f"ParkDistance_{s}", 8, lo=0, hi=255, unit="cm", init=255,
                  comment="Ultrasonic distance; 255 is nothing in range")
              for s in ("FL", "FCL", "FCR", "FR", "RL", "RCL", "RCR", "RR")),
        ], "Park distance control"),
        msg(0x2C5, "ADAS_BSD", "ADAS", 200, [
            enum("BSD_State", 2, ("Off", "Active", "Blocked", "Fault")),
            enum("BlindSpotLeft", 2, side),
            enum("BlindSpotRight", 2, side),
            enum("RCTA_Left", 2, side),
            enum("RCTA_Right", 2, side),
            enum("DoorOpenWarning", 2, ("None", "Left", "Right", "Both")),
        ], "Blind spot, rear cross traffic and door opening warnings"),
        msg(0x2C6, "ADAS_TSR", "ADAS", 1000, [
            num("SpeedLimitDetected", 8, lo=0, hi=250, unit="km/h"),
            enum("SpeedLimitSource", 2, ("None", "Camera", "Map", "Fused")),
            flag("OvertakingProhibited", "No", "Yes"),
            enum("TSR_State", 2, ("Off", "Active", "Degraded", "Fault")),
            flag("SpeedLimitWarning"),
        ], "Traffic sign recognition"),
        msg(0x2C7, "ADAS_Status", "ADAS", 500, [
            enum("CameraState", 3, sensor),
            enum("RadarState", 3, sensor),
            enum("UltrasonicState", 2, ("Off", "OK", "Blocked", "Fault")),
            enum("DriverMonitorState", 3, ("Off", "Attentive", "Distracted", "Drowsy",
                                           "Absent", "Fault")),
            enum("HandsOnWheel", 2, ("Unknown", "HandsOn", "HandsOff")),
            temp("CameraTemp", 24, hi=125),
            temp("RadarTemp", 23, hi=125),
        ], "Sensor health and driver monitoring"),
    ]


def cluster() -> list[Msg]:
    return [
        msg(0x5C5, "IC_Odometer", "IC", 1000, [
            num("Odometer", 24, 0.1, lo=0, hi=1677721.5, unit="km", init=23456.7),
            num("TripA", 20, 0.1, lo=0, hi=99999.9, unit="km", init=312.4),
            num("TripB", 20, 0.1, lo=0, hi=99999.9, unit="km", init=4172.9),
        ], "Odometer and trip meters", big_endian=True),
        msg(0x5C6, "IC_Display", "IC", 500, [
            num("DisplayedSpeed", 8, lo=0, hi=250, unit="km/h",
                comment="Speedometer reading, a little above the true speed as regulations "
                        "require"),
            enum("DisplayUnits", 1, ("Metric", "Imperial")),
            pct("DisplayBrightness", 80),
            enum("DisplayMode", 2, ("Day", "Night", "Auto"), init=2),
            *(flag(f"Telltale_{name}") for name in (
                "Seatbelt", "ABS", "ESC", "Battery12V", "TirePressure", "ReadyToDrive",
                "ReducedPower", "ParkingBrake", "Charging", "HighBeam", "LaneAssist", "ACC")),
            num("RangeDisplayed", 10, lo=0, hi=1000, unit="km", init=198),
        ], "Speedometer and telltales"),
        msg(0x5C7, "IC_Warnings", "IC", 1000, [
            num("ServiceDueDays", 10, lo=0, hi=1000, unit="d", init=213),
            num("ServiceDueDistance", 10, 25, lo=0, hi=25000, unit="km", init=11200),
            flag("WasherFluidWarning"),
            flag("DoorAjarWarning"),
            enum("SeatbeltReminder", 2, ("Off", "Visual", "Chime", "Urgent")),
            flag("LowRangeWarning"),
            enum("MasterWarning", 2, ("None", "Info", "Warning", "Critical")),
            enum("Chime", 3, ("None", "Door", "Seatbelt", "Warning", "Turn", "Alert")),
        ], "Driver warnings and service reminders"),
        msg(0x5C8, "IC_Settings", "IC", 1000, [
            enum("Language", 4, ("English", "German", "French", "Spanish", "Italian",
                                 "Japanese", "Chinese"), init=1),
            enum("TimeFormat", 1, ("H24", "H12")),
            enum("TemperatureUnit", 1, ("Celsius", "Fahrenheit")),
            num("VolumeLevel", 5, lo=0, hi=30, init=12),
            enum("ConsumptionUnit", 2, ("kWhPer100km", "KmPerKWh", "WhPerKm", "MiPerKWh")),
        ], "Cluster settings"),
        msg(0x5C9, "IC_DateTime", "IC", 1000, [
            num("ClockYear", 7, 1, 2000, lo=2000, hi=2127, unit="", init=2026),
            num("ClockMonth", 4, lo=1, hi=12, init=6),
            num("ClockDay", 5, lo=1, hi=31, init=1),
            num("ClockHour", 5, lo=0, hi=23, unit="h", init=8),
            num("ClockMinute", 6, lo=0, hi=59, unit="min"),
            num("ClockSecond", 6, lo=0, hi=59, unit="s"),
            enum("TimeSource", 2, ("None", "GPS", "Network", "Manual"), init=1),
            flag("TimeValid", "Invalid", "Valid", init=1),
        ], "Clock shown in the cluster, UTC"),
    ]


def diagnostics() -> list[Msg]:
    lamp = ("Off", "On", "Error", "NotAvailable")
    flash = ("SlowFlash", "FastFlash", "Reserved", "NoFlash")
    ecu_state = ("Off", "Sleep", "Init", "Running", "Degraded", "Fault", "Flashing")
    info_pages = tuple((
        num(f"{node}_SwMajor", 8, lo=0, hi=255, init=3 + index % 4),
        num(f"{node}_SwMinor", 8, lo=0, hi=255, init=(7 * index) % 20),
        num(f"{node}_SwPatch", 8, lo=0, hi=255, init=(13 * index) % 9),
        num(f"{node}_HwRevision", 8, lo=0, hi=255, init=1 + index % 3),
        num(f"{node}_Uptime", 16, lo=0, hi=65535, unit="s",
            comment="Seconds since the ECU last woke up"),
    ) for index, node in enumerate(NODES))
    return [
        msg(0x18FECA00, "DIAG_DM1", "DIAG", 1000, [
            enum("ProtectLamp", 2, lamp),
            enum("AmberWarningLamp", 2, lamp),
            enum("RedStopLamp", 2, lamp),
            enum("MalfunctionLamp", 2, lamp),
            enum("FlashProtectLamp", 2, flash, init=3),
            enum("FlashAmberWarningLamp", 2, flash, init=3),
            enum("FlashRedStopLamp", 2, flash, init=3),
            enum("FlashMalfunctionLamp", 2, flash, init=3),
            num("DM1_SPN_Low", 16, lo=0, hi=65535,
                comment="Low 16 bits of the suspect parameter number"),
            num("DM1_FMI", 5, lo=0, hi=31, comment="Failure mode identifier"),
            num("DM1_SPN_High", 3, lo=0, hi=7, comment="High 3 bits of the SPN"),
            num("DM1_OccurrenceCount", 7, lo=0, hi=126),
            num("DM1_SPNConversion", 1, lo=0, hi=1),
        ], "J1939 DM1 active diagnostic trouble codes (PGN 65226), first DTC",
            extended=True),
        msg(0x6F0, "DIAG_EcuStates", "DIAG", 1000, [
            *(enum(f"EcuState_{node}", 3, ecu_state, init=1) for node in NODES),
            flag("DiagSessionActive"),
            enum("DiagSessionType", 2, ("Default", "Extended", "Programming", "Safety")),
        ], "Network state of every ECU as the gateway sees it"),
        msg(0x6F1, "DIAG_DtcCounts", "DIAG", 1000, [
            *(num(f"DtcCount_{node}", 4, lo=0, hi=15) for node in NODES),
            num("DtcCountTotal", 8, lo=0, hi=255),
        ], "Stored diagnostic trouble codes per ECU"),
        msg(0x6F2, "DIAG_EcuInfo", "DIAG", 500, [],
            "Software versions and uptime, one ECU per page",
            multiplexer=num("EcuIndex", 8, lo=0, hi=len(NODES) - 1,
                            comment="Page n describes the n-th node of BU_"),
            pages=info_pages),
    ]


def network_management() -> list[Msg]:
    """AUTOSAR NM frames: every ECU announces that it keeps the bus awake."""
    return [
        msg(0x500 + index, f"NM_{node}", node, 1000, [
            num(f"NM_{node}_SourceNode", 8, lo=0, hi=255, init=index + 1),
            flag(f"NM_{node}_RepeatMsgRequest"),
            gap(3),
            flag(f"NM_{node}_ActiveWakeup"),
            gap(1),
            flag(f"NM_{node}_PartialNetwork"),
        ], f"Network management of {node}")
        for index, node in enumerate(NODES)
    ]


def vehicle() -> list[Msg]:
    return [*vcu(), *inverter(), *battery(), *charger(), *chassis(), *suspension(), *tpms(),
            *body(), *climate(), *adas(), *cluster(), *diagnostics(), *network_management()]


# ----------------------------------------------------------------------------------------
# Layout and DBC text.

def dbc_start(position: int, big_endian: bool) -> int:
    """DBC start bit of a field whose first bit is `position` in transmission order.

    Intel fields are counted from the least significant bit of byte 0 upwards; Motorola fields
    from the most significant bit of byte 0 downwards, and DBC names them by their MSB in the
    "sawtooth" numbering (bit 7 of byte 0 is 7, bit 0 of byte 1 is 8).
    """
    if not big_endian:
        return position
    return (position // 8) * 8 + 7 - position % 8


def place(fields: Sequence[Field], first: int, limit: int, big_endian: bool, mux: str,
          where: str) -> tuple[list[Placed], int]:
    placed = []
    position = first
    for item in fields:
        if item.name:
            placed.append(Placed(item, dbc_start(position, big_endian), big_endian, mux))
        position += item.length
    if position > limit:
        raise ValueError(f"{where}: {position} bits do not fit in {limit}")
    return placed, position


def layout(message: Msg) -> list[Placed]:
    bits = message.length * 8
    tail: list[Field] = []
    if message.alive_counter:
        tail.append(counter(message.name))
    if message.checksum:
        tail.append(crc(message.name))
    tail_bits = sum(item.length for item in tail)
    placed: list[Placed] = []
    first = 0
    if message.multiplexer is not None:
        mux, first = place([message.multiplexer], 0, bits, message.big_endian, " M",
                           message.name)
        placed += mux
    body, _ = place(message.fields, first, bits - tail_bits, message.big_endian, "",
                    message.name)
    placed += body
    for page, fields in enumerate(message.pages):
        page_fields, _ = place(fields, first, bits - tail_bits, message.big_endian,
                               f" m{page}", f"{message.name} page {page}")
        placed += page_fields
    end, _ = place(tail, bits - tail_bits, bits, message.big_endian, "", message.name)
    return placed + end


def number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.10g}"


def quoted(text: str) -> str:
    if '"' in text or "\\" in text:
        raise ValueError(f"keep quotes and backslashes out of DBC strings: {text!r}")
    return f'"{text}"'


def dbc_frame_id(message: Msg) -> int:
    return message.frame_id | 0x80000000 if message.extended else message.frame_id


def signal_line(item: Placed, receivers: str) -> str:
    f = item.field
    minimum, maximum = f.bounds()
    order = "0" if item.big_endian else "1"
    sign = "-" if f.signed else "+"
    return (f" SG_ {f.name}{item.mux} : {item.start}|{f.length}@{order}{sign} "
            f"({number(f.scale)},{number(f.offset)}) [{number(minimum)}|{number(maximum)}] "
            f"{quoted(f.unit)} {receivers}")


FRAME_FORMATS = ('"StandardCAN","ExtendedCAN","reserved","J1939PG","reserved","reserved",'
                 '"reserved","reserved","reserved","reserved","reserved","reserved",'
                 '"reserved","reserved","StandardCAN_FD","ExtendedCAN_FD"')
FRAME_FORMAT_EXTENDED = 1
FRAME_FORMAT_FD = 14


def render(messages: Sequence[Msg]) -> str:
    laid_out = [(message, layout(message)) for message in messages]
    lines = ['VERSION "1.0"', "", "", "NS_ :"]
    lines += [f"\t{keyword}" for keyword in (
        "NS_DESC_", "CM_", "BA_DEF_", "BA_", "VAL_", "CAT_DEF_", "CAT_", "FILTER",
        "BA_DEF_DEF_", "EV_DATA_", "ENVVAR_DATA_", "SGTYPE_", "SGTYPE_VAL_", "BA_DEF_SGTYPE_",
        "BA_SGTYPE_", "SIG_TYPE_REF_", "VAL_TABLE_", "SIG_GROUP_", "SIG_VALTYPE_",
        "SIGTYPE_VALTYPE_", "BO_TX_BU_", "BA_DEF_REL_", "BA_REL_", "BA_DEF_DEF_REL_",
        "BU_SG_REL_", "BU_EV_REL_", "BU_BO_REL_", "SG_MUL_VAL_")]
    lines += ["", "BS_:", "", "BU_: " + " ".join(NODES), "", ""]
    for message, placed in laid_out:
        receivers = ",".join(RECEIVERS[message.sender])
        lines.append(f"BO_ {dbc_frame_id(message)} {message.name}: {message.length} "
                     f"{message.sender}")
        lines += [signal_line(item, receivers) for item in placed]
        lines.append("")
    lines.append("")
    lines.append('CM_ "Example electric vehicle: one CAN FD bus at 500 kbit/s (2 Mbit/s data '
                 'phase), every message classic CAN except ADAS_ObjectList. Generated by '
                 'tools/gen-dbc.";')
    lines += [f"CM_ BU_ {node} {quoted(text)};" for node, text in NODES.items()]
    for message, placed in laid_out:
        frame_id = dbc_frame_id(message)
        lines.append(f"CM_ BO_ {frame_id} {quoted(message.comment)};")
        lines += [f"CM_ SG_ {frame_id} {item.field.name} {quoted(item.field.comment)};"
                  for item in placed if item.field.comment]
    lines += [
        'BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;',
        f'BA_DEF_ BO_ "VFrameFormat" ENUM {FRAME_FORMATS};',
        'BA_DEF_ BO_ "CANFD_BRS" ENUM "0","1";',
        'BA_DEF_ SG_ "GenSigStartValue" FLOAT -1E+011 1E+011;',
        'BA_DEF_ "BusType" STRING ;',
        'BA_DEF_ "DBName" STRING ;',
        'BA_DEF_ "Baudrate" INT 0 1000000;',
        'BA_DEF_ "BaudrateCANFD" INT 0 16000000;',
        'BA_DEF_DEF_ "GenMsgCycleTime" 0;',
        'BA_DEF_DEF_ "VFrameFormat" "StandardCAN";',
        'BA_DEF_DEF_ "CANFD_BRS" "1";',
        'BA_DEF_DEF_ "GenSigStartValue" 0;',
        'BA_DEF_DEF_ "BusType" "CAN FD";',
        'BA_DEF_DEF_ "DBName" "";',
        'BA_DEF_DEF_ "Baudrate" 500000;',
        'BA_DEF_DEF_ "BaudrateCANFD" 2000000;',
        'BA_ "BusType" "CAN FD";',
        'BA_ "DBName" "Vehicle";',
        'BA_ "Baudrate" 500000;',
        'BA_ "BaudrateCANFD" 2000000;',
    ]
    for message, placed in laid_out:
        frame_id = dbc_frame_id(message)
        lines.append(f'BA_ "GenMsgCycleTime" BO_ {frame_id} {message.cycle_ms};')
        if message.extended:
            lines.append(f'BA_ "VFrameFormat" BO_ {frame_id} {FRAME_FORMAT_EXTENDED};')
        if message.fd:
            lines.append(f'BA_ "VFrameFormat" BO_ {frame_id} {FRAME_FORMAT_FD};')
            lines.append(f'BA_ "CANFD_BRS" BO_ {frame_id} 1;')
        lines += [f'BA_ "GenSigStartValue" SG_ {frame_id} {item.field.name} '
                  f"{number(item.field.raw_initial())};"
                  for item in placed if item.field.raw_initial() != 0]
    for message, placed in laid_out:
        for item in placed:
            if item.field.choices:
                labels = " ".join(f"{key} {quoted(label)}"
                                  for key, label in reversed(item.field.choices))
                lines.append(f"VAL_ {dbc_frame_id(message)} {item.field.name} {labels} ;")
    for message, placed in laid_out:
        lines += [f"SIG_VALTYPE_ {dbc_frame_id(message)} {item.field.name} : 1;"
                  for item in placed if item.field.is_float]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------
# Checks that the file is what the rest of the project relies on.

def all_fields(messages: Sequence[Msg]) -> Iterator[tuple[Msg, Field]]:
    for message in messages:
        for item in layout(message):
            yield message, item.field


def check_model(messages: Sequence[Msg]) -> None:
    seen: dict[str, str] = {}
    for message, item in all_fields(messages):
        if len(item.name) > MAX_NAME or len(message.name) > MAX_NAME:
            raise ValueError(f"{message.name}.{item.name}: names longer than {MAX_NAME}")
        if item.name in seen:
            raise ValueError(f"{item.name} is in both {seen[item.name]} and {message.name}; "
                             "signal names are unique so the simulator can address them")
        seen[item.name] = message.name
        low, high = item.bounds()
        if not low <= item.initial <= high:
            raise ValueError(f"{message.name}.{item.name}: start value {item.initial} is "
                             f"outside [{low}, {high}]")
        raw_low, raw_high = item.raw_bounds()
        if not item.is_float and not raw_low <= item.raw_initial() <= raw_high:
            raise ValueError(f"{message.name}.{item.name}: start value does not fit the bits")
    load = bus_load(messages)
    if load > MAX_FRAMES_PER_SECOND:
        raise ValueError(f"bus load {load:.0f} frames/s is above {MAX_FRAMES_PER_SECOND}")
    if len(seen) < MIN_SIGNALS:
        raise ValueError(f"only {len(seen)} signals; the example vehicle has {MIN_SIGNALS}+")


def bus_load(messages: Sequence[Msg]) -> float:
    """Frames per second; a multiplexed message sends one page per cycle."""
    return sum(message.frames_per_second() for message in messages)


def validate(text: str) -> cantools.database.can.Database:
    """Load the text as the agent will: strict, so overlaps and overflows are errors."""
    database = cantools.database.load_string(text, database_format="dbc", strict=True)
    missing = [m.name for m in database.messages if not m.cycle_time]
    if missing:
        raise ValueError(f"messages without GenMsgCycleTime: {missing}")
    return database


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gen-dbc",
        description="Generate the example vehicle's CAN database (an EV with 800+ signals) "
                    "as a DBC file. The output is the same, byte for byte, on every run.")
    parser.add_argument("--output", "-o", type=Path, default=DEFAULT_OUTPUT,
                        help="where to write the DBC (default: dbc/vehicle.dbc in the "
                             "repository)")
    args = parser.parse_args(argv)
    messages = vehicle()
    try:
        check_model(messages)
        text = render(messages)
        database = validate(text)
    except ValueError as exc:
        print(f"gen-dbc: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(text.encode("ascii"))
    signals = sum(len(message.signals) for message in database.messages)
    print(f"{args.output}: {len(database.messages)} messages, {signals} signals, "
          f"{bus_load(messages):.0f} frames/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
