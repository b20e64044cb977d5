"""Simulate a drive of the example EV as a candump log, every frame encoded from the DBC.

The story, scaled to --duration (the default 240 s is the realistic pace):
parked with the ignition off, the driver unlocks and gets in; ignition on and the high-voltage
system comes up; accelerate to 80 km/h and cruise with adaptive cruise control; brake and
turn into a shop; park there, open the trunk and load it (the rear suspension sinks, the rear
tire pressures rise); close the trunk and drive away through town; park at a DC charger,
switch off and charge (negative pack current, rising SOC and cell voltages).

A small vehicle model carries the story. One function per phase decides what the driver does
(ignition, gear, speed, doors, trunk, plug); `physics` derives the rest (motor speed and
torque, pack current, SOC, cell voltages, temperatures, ride heights, tire pressures,
odometer). One provider per message reads the model into signal values; signals no provider
sets send their DBC start value, temperatures drifting slowly around it. Frames go out at each
message's cycle time with a little jitter, multiplexed messages one page per frame, only while
their ECU is awake, quantised and clamped to the DBC's ranges and encoded by cantools.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gzip
import heapq
import io
import math
import os
import random
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import cantools
from cantools.database.can import Database, Message

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DBC = REPO / "dbc" / "vehicle.dbc"
DEFAULT_START = int(datetime(2026, 6, 1, 8, 0, tzinfo=UTC).timestamp())
STORY_SECONDS = 240.0
STEP = 0.01  # model time step, s

CORNERS = ("FL", "FR", "RL", "RR")
KMH = 3.6

# The car: a compact EV, rear motor, single speed.
MASS = 1650.0  # kg, with a full charge of fluids, no driver
DRIVER = 80.0
WHEEL_RADIUS = 0.33
GEAR_RATIO = 8.19
DRAG = 0.5 * 1.2 * 0.28 * 2.3  # rho/2 * Cd * A
ROLLING = 0.011
WHEELBASE = 2.70
TRACK = 1.55
STEERING_RATIO = 15.0
DRIVE_EFFICIENCY = 0.90
REGEN_MAX = 120.0  # Nm at the motor
TORQUE_MAX = 300.0
KT = 0.6  # Nm per A of q-axis current
SENSOR_TEETH = 48
# The pack: 96 cell groups in series, 2 cells in parallel each.
CELLS = 96
MODULES = 24
SENSORS_PER_MODULE = 3
CAPACITY_AH = 115.0
USABLE_KWH = 36.8
CELL_RESISTANCE = 0.0012  # per cell group, ohm
PACK_HEAT_CAPACITY = 250_000.0  # J/K
OCV_TABLE = ((0, 3.00), (10, 3.45), (20, 3.56), (30, 3.62), (40, 3.68), (50, 3.74),
             (60, 3.82), (70, 3.90), (80, 3.98), (90, 4.07), (100, 4.18))
AUX_POWER = 450.0  # W, 12 V loads through the DC/DC converter
# The morning: 16 degC outside, the car stood overnight.
AMBIENT = 16.0
SETPOINT = 21.0
START_SOC = 62.0
START_ODOMETER = 23456.7
COLD_PRESSURE = 250.0  # kPa gauge at ambient temperature
ATMOSPHERE = 101.3
# The story's numbers.
CRUISE_KMH = 80.0
TOWN_KMH = 50.0
TRUNK_LOAD = 160.0  # kg loaded at the shop, behind the rear axle
REAR_SAG = 0.14  # mm per kg in the trunk
FRONT_LIFT = 0.02
REAR_PRESSURE_RISE = 0.025  # kPa per kg in the trunk
DC_CHARGE_POWER = 50_000.0  # W


def smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def ramp(p: float, start: float, end: float) -> float:
    """0 before `start`, 1 after `end`, linear between."""
    return min(max((p - start) / (end - start), 0.0), 1.0)


def during(p: float, start: float, end: float) -> bool:
    return start <= p < end


def ocv(soc: float) -> float:
    socs = [s for s, _ in OCV_TABLE]
    i = min(max(bisect.bisect_right(socs, soc), 1), len(OCV_TABLE) - 1)
    (s0, v0), (s1, v1) = OCV_TABLE[i - 1], OCV_TABLE[i]
    return v0 + (v1 - v0) * (soc - s0) / (s1 - s0)


@dataclass(frozen=True)
class Cell:
    """Manufacturing spread: capacity mismatch shows as an SOC offset."""

    soc_offset: float
    resistance: float


@dataclass
class Vehicle:
    """The state of the car: what the driver does, and what physics makes of it."""

    epoch: float = DEFAULT_START  # wall clock at t = 0
    t: float = 0.0
    # Set by the phases.
    ignition: str = "Off"
    gear: str = "P"
    speed: float = 0.0  # m/s
    precharging: bool = False
    drive_ready: bool = False
    parking_brake: bool = True
    brake_hold: bool = False
    unlocked: bool = False
    remote: str = "None"
    key_location: str = "None"
    doors: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(CORNERS, False))
    driver_seated: bool = False
    belt: bool = False
    trunk: float = 0.0  # tailgate opening, 0..1
    load: float = 0.0  # kg in the trunk
    climate_on: bool = False
    acc_active: bool = False
    turn: str = ""
    turn_curvature: float = 0.0  # 1/m, from the driver turning off the road
    speed_limit: int = 0
    obstacle_front: float = 255.0  # cm, park assist
    obstacle_rear: float = 255.0
    charge_port_open: bool = False
    plugged: bool = False
    charge_stage: str = "Idle"
    charge_power: float = 0.0  # W into the pack
    # Derived by physics.
    accel: float = 0.0
    distance: float = 0.0
    curvature: float = 0.0
    steering_angle: float = 0.0
    steering_speed: float = 0.0
    motor_torque: float = 0.0
    motor_rpm: float = 0.0
    friction_torque: float = 0.0
    brake_pressure: float = 0.0
    motor_power: float = 0.0  # electrical, W
    current: float = 0.0  # A, positive discharging
    soc: float = START_SOC
    cell_volts: list[float] = field(default_factory=list)
    pack_voltage: float = 0.0
    pack_temp: float = 19.0
    module_temps: list[float] = field(default_factory=list)
    coolant_motor: float = 18.0
    coolant_battery: float = 19.0
    stator_temp: float = 22.0
    igbt_temp: float = 24.0
    disc_front: float = 24.0
    disc_rear: float = 22.0
    cabin_temp: float = 17.0
    heat_demand: float = 0.0  # 0..1
    tire_temp: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORNERS, 15.0))
    heights: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORNERS, 0.0))
    body_accel: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORNERS, 0.0))
    wheel_speed: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORNERS, 0.0))
    wheel_turns: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CORNERS, 0.0))
    energy_used: float = 0.0  # kWh this trip
    energy_regen: float = 0.0
    lifetime_charged: float = 18544.2
    lifetime_discharged: float = 17421.9
    awake_since: dict[str, float] = field(default_factory=dict)

    @property
    def kmh(self) -> float:
        return self.speed * KMH

    @property
    def hv_on(self) -> bool:
        """Contactors closed: driving, or charging."""
        return self.drive_ready or self.charge_stage in ("Precharge", "Charging")

    @property
    def charging(self) -> bool:
        return self.charge_stage == "Charging"


# ----------------------------------------------------------------------------------------
# The story: one function per phase, given the progress 0..1 through the phase.

def parked(v: Vehicle, p: float) -> None:
    """Locked overnight; the driver walks up, unlocks, gets in and buckles up."""
    v.unlocked = p >= 0.3
    v.remote = "Unlock" if during(p, 0.3, 0.36) else "None"
    v.key_location = "None" if p < 0.25 else "DriverSide" if p < 0.6 else "Cabin"
    v.doors["FL"] = during(p, 0.45, 0.75)
    v.driver_seated = p >= 0.6
    v.belt = p >= 0.85


def ignition_on(v: Vehicle, p: float) -> None:
    """Start button with the brake pressed; precharge, ready, select D."""
    v.remote = "None"
    v.ignition = "Accessory" if p < 0.3 else "Start" if p < 0.38 else "On"
    v.brake_hold = p >= 0.25
    v.precharging = during(p, 0.38, 0.6)
    v.drive_ready = p >= 0.6
    v.climate_on = p >= 0.4
    v.gear = "D" if p >= 0.85 else "P"
    v.parking_brake = p < 0.95
    v.speed_limit = 50


def accelerate(v: Vehicle, p: float) -> None:
    v.brake_hold = False
    v.speed = CRUISE_KMH / KMH * smoothstep(p)
    v.speed_limit = 80 if p > 0.5 else 50


def cruise(v: Vehicle, p: float) -> None:
    """Adaptive cruise behind a car, speed swinging a little with the traffic."""
    v.speed = (CRUISE_KMH + 3.0 * math.sin(4 * math.pi * p)) / KMH
    v.acc_active = during(p, 0.1, 0.9)


def brake_to_shop(v: Vehicle, p: float) -> None:
    v.acc_active = False
    v.speed = CRUISE_KMH / KMH * (1 - smoothstep(p))
    v.speed_limit = 50
    v.turn = "Right" if during(p, 0.55, 0.97) else ""
    v.turn_curvature = -0.06 * math.sin(math.pi * ramp(p, 0.75, 1.0))
    v.brake_hold = p > 0.97


def shop_stop(v: Vehicle, p: float) -> None:
    """Park, get out, open the trunk, load four boxes, close it, get back in, drive off."""
    v.speed = 0.0
    v.turn, v.turn_curvature = "", 0.0
    v.gear = "P" if during(p, 0.04, 0.95) else "D"
    v.parking_brake = during(p, 0.05, 0.97)
    v.brake_hold = not v.parking_brake
    v.doors["FL"] = during(p, 0.06, 0.12) or during(p, 0.82, 0.88)
    v.driver_seated = not during(p, 0.1, 0.86)
    v.belt = not during(p, 0.07, 0.9)
    v.key_location = "Cabin" if v.driver_seated else "Trunk"
    v.trunk = ramp(p, 0.15, 0.22) - ramp(p, 0.72, 0.79)  # the power tailgate moving
    v.load = TRUNK_LOAD * math.floor(4 * ramp(p, 0.3, 0.66)) / 4
    v.obstacle_rear = 150.0 if p < 0.95 else 255.0


def drive_away(v: Vehicle, p: float) -> None:
    """Through town: pull out to the left, 50 km/h, stop at the charger."""
    v.brake_hold = p > 0.97
    v.speed = TOWN_KMH / KMH * (smoothstep(ramp(p, 0.0, 0.3)) - smoothstep(ramp(p, 0.7, 1.0)))
    v.turn = "Left" if p < 0.1 else ""
    v.turn_curvature = 0.05 * math.sin(math.pi * ramp(p, 0.0, 0.12))
    v.obstacle_rear = 255.0
    v.obstacle_front = 60.0 + 195.0 * (1 - ramp(p, 0.9, 1.0)) if p > 0.9 else 255.0


def park_at_charger(v: Vehicle, p: float) -> None:
    """P, parking brake, switch off, get out, open the charge port, plug in."""
    v.speed = 0.0
    v.gear = "P" if p >= 0.1 else "D"
    v.parking_brake = p >= 0.15
    v.brake_hold = p < 0.15
    v.drive_ready = p < 0.3
    v.ignition = "On" if p < 0.3 else "Off"
    v.climate_on = p < 0.3
    v.belt = p < 0.35
    v.doors["FL"] = during(p, 0.4, 0.55)
    v.driver_seated = p < 0.5
    v.key_location = "Cabin" if p < 0.5 else "DriverSide"
    v.charge_port_open = p >= 0.6
    v.plugged = p >= 0.8
    v.obstacle_front = 60.0


def charge(v: Vehicle, p: float) -> None:
    """CCS handshake, cable check, precharge, then 50 kW; the driver locks and walks off."""
    v.charge_stage = ("Handshake" if p < 0.04 else "CableCheck" if p < 0.07
                      else "Precharge" if p < 0.1 else "Charging")
    v.charge_power = DC_CHARGE_POWER * ramp(p, 0.1, 0.16) if v.charging else 0.0
    v.unlocked = p < 0.05
    v.remote = "Lock" if during(p, 0.05, 0.1) else "None"
    v.key_location = "DriverSide" if p < 0.15 else "None"


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float  # at the default duration; scaled to the requested one
    act: Callable[[Vehicle, float], None]


STORY = (
    Phase("parked", 10, parked),
    Phase("ignition_on", 10, ignition_on),
    Phase("accelerate", 20, accelerate),
    Phase("cruise", 50, cruise),
    Phase("brake_to_shop", 14, brake_to_shop),
    Phase("shop_stop", 46, shop_stop),
    Phase("drive_away", 40, drive_away),
    Phase("park_at_charger", 10, park_at_charger),
    Phase("charge", 40, charge),
)


class Story:
    def __init__(self, duration: float) -> None:
        scale = duration / sum(phase.seconds for phase in STORY)
        self.starts: list[float] = []
        self.lengths = [phase.seconds * scale for phase in STORY]
        start = 0.0
        for length in self.lengths:
            self.starts.append(start)
            start += length

    def act(self, v: Vehicle) -> None:
        index = max(bisect.bisect_right(self.starts, v.t) - 1, 0)
        progress = min((v.t - self.starts[index]) / self.lengths[index], 1.0)
        STORY[index].act(v, progress)


# ----------------------------------------------------------------------------------------
# Physics: everything the driver does not decide.

@dataclass(frozen=True)
class Car:
    """What differs from one car (seed) to the next: cell spread, sensors, road."""

    cells: tuple[Cell, ...]
    module_offsets: tuple[float, ...]
    height_offsets: dict[str, float]
    road_phases: tuple[float, ...]

    @staticmethod
    def build(rng: random.Random) -> Car:
        cells = tuple(Cell(rng.gauss(0, 0.6), CELL_RESISTANCE * rng.uniform(0.95, 1.05))
                      for _ in range(CELLS))
        offsets = tuple(rng.uniform(-1.5, 1.5) for _ in range(MODULES * SENSORS_PER_MODULE))
        heights = {corner: rng.uniform(-1.0, 1.0) for corner in CORNERS}
        phases = tuple(rng.uniform(0, 2 * math.pi) for _ in range(2 * len(CORNERS)))
        return Car(cells, offsets, heights, phases)


def road_curvature(distance: float) -> float:
    """Gentle bends of a country road, radius 280 m at their tightest; positive left."""
    return 0.0036 * math.sin(2 * math.pi * distance / 1100) * math.sin(
        2 * math.pi * distance / 2900)


def approach(value: float, target: float, time_constant: float, dt: float) -> float:
    return value + (target - value) * min(dt / time_constant, 1.0)


def physics(v: Vehicle, car: Car, dt: float, previous_speed: float) -> None:
    v.accel = (v.speed - previous_speed) / dt
    v.distance += v.speed * dt
    _chassis(v, dt)
    _drivetrain(v)
    _battery(v, car, dt)
    _thermal(v, car, dt)
    _ride(v, car)


def _chassis(v: Vehicle, dt: float) -> None:
    moving = v.speed > 0.05
    v.curvature = (road_curvature(v.distance) + v.turn_curvature) if moving else 0.0
    angle = math.degrees(math.atan(WHEELBASE * v.curvature)) * STEERING_RATIO
    v.steering_speed = (angle - v.steering_angle) / dt
    v.steering_angle = angle
    slip = 1 + 0.004 * max(v.accel, 0.0)
    for corner in CORNERS:
        side = 1 if corner.endswith("L") else -1
        speed = v.speed * (1 - side * v.curvature * TRACK / 2)
        v.wheel_speed[corner] = speed * (slip if corner.startswith("R") else 1.0)
        v.wheel_turns[corner] += v.wheel_speed[corner] * dt / (2 * math.pi * WHEEL_RADIUS)


def _drivetrain(v: Vehicle) -> None:
    mass = MASS + v.load + (DRIVER if v.driver_seated else 0.0)
    resistance = (DRAG * v.speed**2 + ROLLING * mass * 9.81) if v.speed > 0.05 else 0.0
    wheel_torque = (mass * v.accel + resistance) * WHEEL_RADIUS
    motor_torque = wheel_torque / GEAR_RATIO
    regen_limit = REGEN_MAX * min(1.0, v.kmh / 8)  # regeneration fades near standstill
    friction = 0.0
    if motor_torque < -regen_limit:
        friction = -(motor_torque + regen_limit) * GEAR_RATIO
        motor_torque = -regen_limit
    if v.brake_hold and v.speed < 0.05:
        friction = 1200.0  # the driver holds the car on the brake
    v.motor_torque = min(motor_torque, TORQUE_MAX) if v.drive_ready else 0.0
    v.friction_torque = friction
    v.brake_pressure = friction / 40.0  # Nm per bar over four wheels
    v.motor_rpm = v.speed / WHEEL_RADIUS * GEAR_RATIO * 60 / (2 * math.pi)
    mechanical = v.motor_torque * v.motor_rpm * 2 * math.pi / 60
    v.motor_power = (mechanical / DRIVE_EFFICIENCY if mechanical > 0
                     else mechanical * DRIVE_EFFICIENCY)


def _battery(v: Vehicle, car: Car, dt: float) -> None:
    if v.hv_on:
        climate = 2500.0 * v.heat_demand + 250.0 if v.climate_on else 0.0
        cooling = 350.0 if v.charging else 0.0
        power = v.motor_power + AUX_POWER + climate + cooling - v.charge_power
        voltage = v.pack_voltage or CELLS * ocv(v.soc)
        v.current = power / voltage
    else:
        v.current = 0.0
    v.soc -= v.current * dt / (CAPACITY_AH * 3600) * 100
    v.cell_volts = [ocv(v.soc + cell.soc_offset) - v.current * cell.resistance
                    for cell in car.cells]
    v.pack_voltage = sum(v.cell_volts)
    energy = v.current * v.pack_voltage * dt / 3.6e6
    if energy > 0:
        v.lifetime_discharged += energy
    else:
        v.lifetime_charged -= energy
    if v.motor_power > 0:
        v.energy_used += v.motor_power * dt / 3.6e6
    else:
        v.energy_regen -= v.motor_power * dt / 3.6e6


def _thermal(v: Vehicle, car: Car, dt: float) -> None:
    heat = v.current**2 * CELL_RESISTANCE * CELLS
    v.pack_temp += (heat / PACK_HEAT_CAPACITY - (v.pack_temp - v.coolant_battery) / 3000) * dt
    v.module_temps = [v.pack_temp + offset for offset in car.module_offsets]
    v.coolant_battery = approach(v.coolant_battery, 24.0 if v.hv_on else AMBIENT, 1500, dt)
    v.coolant_motor = approach(v.coolant_motor, 30.0 if v.drive_ready else AMBIENT, 900, dt)
    load = abs(v.motor_power) / 1000
    v.stator_temp = approach(v.stator_temp, v.coolant_motor + 4 + 0.6 * load, 240, dt)
    v.igbt_temp = approach(v.igbt_temp, v.coolant_motor + 3 + 0.1 * abs(v.current), 30, dt)
    braking = v.friction_torque * v.speed / WHEEL_RADIUS  # W into the discs
    v.disc_front += (0.7 * braking / 8000 - (v.disc_front - AMBIENT) / 400) * dt
    v.disc_rear += (0.3 * braking / 6000 - (v.disc_rear - AMBIENT) / 400) * dt
    cabin_target = SETPOINT if v.climate_on else AMBIENT
    v.cabin_temp = approach(v.cabin_temp, cabin_target, 240 if v.climate_on else 1800, dt)
    v.heat_demand = min(max((SETPOINT - v.cabin_temp) / 4, 0.0), 1.0) if v.climate_on else 0.0
    for corner in CORNERS:
        target = AMBIENT + 0.22 * v.kmh + (1.5 if corner.startswith("R") else 0.0)
        v.tire_temp[corner] = approach(v.tire_temp[corner], target, 500, dt)


def _ride(v: Vehicle, car: Car) -> None:
    """Ride height: pitch under acceleration, roll in bends, the load, the road."""
    lateral = v.speed**2 * v.curvature
    road = min(v.speed / 10, 1.0) * 2.5
    for index, corner in enumerate(CORNERS):
        front = corner.startswith("F")
        left = corner.endswith("L")
        height = car.height_offsets[corner]
        height += (4.0 if front else -4.0) * v.accel
        height += (2.5 if left else -2.5) * lateral
        height += v.load * (FRONT_LIFT if front else -REAR_SAG)
        if v.driver_seated and left:
            height -= 6.0 if front else 2.0
        wave = v.distance / (4.0 + index) + car.road_phases[2 * index]
        bump = v.distance / 1.3 + car.road_phases[2 * index + 1]
        height += road * (math.sin(wave) + 0.4 * math.sin(bump))
        v.heights[corner] = height
        # The short bumps shake the body: the second time derivative of their height, in m/s2.
        v.body_accel[corner] = -road * 0.4 * math.sin(bump) * (v.speed / 1.3) ** 2 / 1000


# ----------------------------------------------------------------------------------------
# Who is awake: the body controller and the gateway wake the bus when the driver comes;
# everything runs with the ignition on; charging needs the battery, charger and climate.

ALWAYS_AWAKE = frozenset({"BCM", "VCU", "DIAG"})
ACCESSORY = frozenset({"IC", "HVAC"})
CHARGING = frozenset({"BMS", "CHG", "HVAC", "IC"})


def awake(node: str, v: Vehicle) -> bool:
    if node in ALWAYS_AWAKE:
        return True
    if v.ignition in ("On", "Start"):
        return True
    if v.ignition == "Accessory":
        return node in ACCESSORY
    return v.plugged and node in CHARGING


def update_awake(v: Vehicle, nodes: Sequence[str]) -> None:
    for node in nodes:
        if not awake(node, v):
            v.awake_since.pop(node, None)
        else:
            v.awake_since.setdefault(node, v.t)


# ----------------------------------------------------------------------------------------
# Providers: the model as signal values, one function per message. Labels (str) are the
# DBC's value names; booleans are 0/1.

Value = float | int | bool | str
Values = dict[str, Value]
Provider = Callable[[Vehicle], Values]
PROVIDERS: dict[str, Provider] = {}


def provides(message: str) -> Callable[[Provider], Provider]:
    def register(function: Provider) -> Provider:
        PROVIDERS[message] = function
        return function
    return register


def vehicle_state(v: Vehicle) -> str:
    if v.charge_stage != "Idle":
        return "Charging"
    if v.drive_ready:
        return "Driving" if v.gear in ("D", "R") else "Ready"
    return "Standby" if v.ignition != "Off" or v.unlocked else "Sleep"


@provides("VCU_TorqueRequest")
def _vcu_torque(v: Vehicle) -> Values:
    return {"TorqueRequest": v.motor_torque, "InverterEnable": v.drive_ready,
            "TorqueMode": "Torque" if v.drive_ready else "Standby"}


@provides("VCU_Status")
def _vcu_status(v: Vehicle) -> Values:
    return {"IgnitionState": v.ignition, "Gear": v.gear, "DriveReady": v.drive_ready,
            "BrakePedalPressed": v.brake_pressure > 1.0,
            "AcceleratorPedal": 100 * max(v.motor_torque, 0.0) / TORQUE_MAX * 1.6,
            "BrakePedalTravel": min(v.brake_pressure, 80.0) / 80 * 60,
            "VehicleState": vehicle_state(v), "StartButtonPressed": v.ignition == "Start"}


@provides("VCU_DCDC")
def _vcu_dcdc(v: Vehicle) -> Values:
    if not v.hv_on:
        return {"DCDC_State": "Standby" if v.ignition != "Off" else "Off",
                "DCDC_OutputVoltage": 12.5, "DCDC_LVBattVoltage": 12.5}
    load = AUX_POWER + (300.0 if v.climate_on else 0.0)
    return {"DCDC_State": "Buck", "DCDC_OutputVoltage": 14.2,
            "DCDC_OutputCurrent": load / 14.2, "DCDC_InputVoltage": v.pack_voltage,
            "DCDC_Temp": v.coolant_motor + 6, "DCDC_Efficiency": 94,
            "DCDC_LVBattVoltage": 14.1}


@provides("VCU_Thermal")
def _vcu_thermal(v: Vehicle) -> Values:
    values: Values = {"CoolantTempMotorLoop": v.coolant_motor,
                      "CoolantTempBatteryLoop": v.coolant_battery}
    if v.hv_on:
        values |= {"CoolantPumpMotorDuty": 35 if v.drive_ready else 0,
                   "CoolantPumpBatteryDuty": 60 if v.charging else 25,
                   "CoolantFlowMotor": 8.5 if v.drive_ready else 0.0,
                   "CoolantFlowBattery": 11.0 if v.charging else 6.2,
                   "ChillerValve": v.charging,
                   "ThermalMode": "ActiveCooling" if v.charging else "Passive"}
    return values


@provides("VCU_Energy")
def _vcu_energy(v: Vehicle) -> Values:
    net = v.energy_used - v.energy_regen
    km = v.distance / 1000
    return {"TripEnergyUsed": v.energy_used, "TripEnergyRegen": v.energy_regen,
            "RangeEstimate": range_estimate(v),
            "TripConsumptionAvg": 100 * net / km if km > 0.5 else 16.4}


def range_estimate(v: Vehicle) -> float:
    return v.soc / 100 * USABLE_KWH / 0.165


@provides("INV_Motor")
def _inv_motor(v: Vehicle) -> Values:
    direction = "Standstill" if v.motor_rpm < 1 else "Forward"
    return {"MotorTorque": round(v.motor_torque, 2), "MotorSpeed": v.motor_rpm,
            "RotationDirection": direction}


def motor_currents(v: Vehicle) -> tuple[float, float]:
    q = v.motor_torque / KT
    d = -0.04 * max(v.motor_rpm - 4500, 0.0)  # field weakening above base speed
    return d, q


@provides("INV_Electrical")
def _inv_electrical(v: Vehicle) -> Values:
    d, q = motor_currents(v)
    return {"MotorCurrentD": round(d, 2), "MotorCurrentQ": round(q, 2)}


@provides("INV_Status")
def _inv_status(v: Vehicle) -> Values:
    d, q = motor_currents(v)
    state = ("Running" if v.drive_ready else "Precharge" if v.precharging
             else "Standby" if v.ignition != "Off" else "Off")
    bus = v.pack_voltage if v.drive_ready or v.precharging else 0.0
    return {"InverterState": state, "DCBusVoltage": bus,
            "DCBusCurrent": v.motor_power / v.pack_voltage if v.drive_ready else 0.0,
            "PhaseCurrentRms": math.hypot(d, q) / math.sqrt(2),
            "ModulationIndex": min(1.1 * v.motor_rpm / 9000 + 0.05, 1.15) if v.drive_ready
            else 0.0,
            "PowerStageEnabled": v.drive_ready}


@provides("INV_Temps")
def _inv_temps(v: Vehicle) -> Values:
    return {"IGBTTemp_U": v.igbt_temp, "IGBTTemp_V": v.igbt_temp + 0.6,
            "IGBTTemp_W": v.igbt_temp + 1.2, "StatorTemp": v.stator_temp,
            "RotorTempEstimate": v.stator_temp - 2, "InverterCoolantInlet": v.coolant_motor,
            "GateDriverTemp": v.igbt_temp + 2, "DCLinkCapacitorTemp": v.coolant_motor + 5}


@provides("BMS_Pack")
def _bms_pack(v: Vehicle) -> Values:
    return {"PackVoltage": v.pack_voltage, "PackCurrent": v.current, "SOC": v.soc}


@provides("BMS_Status")
def _bms_status(v: Vehicle) -> Values:
    state = ("Charge" if v.charging else "Drive" if v.drive_ready
             else "Precharge" if v.precharging or v.charge_stage == "Precharge" else "Standby")
    median = statistics.median(v.cell_volts)
    balancing = sum(volts > median + 0.008 for volts in v.cell_volts) if v.charging else 0
    closed = "Closed" if v.hv_on else "Open"
    return {"BMS_State": state, "ContactorPositive": closed,
            "ContactorNegative": "Closed" if v.hv_on or v.precharging else "Open",
            "PrechargeRelay": "Closed" if v.precharging else "Open",
            "BalancingActive": balancing > 0, "BalancingCellCount": balancing,
            "BatteryCoolingRequest": "Low" if v.charging else "None"}


@provides("BMS_CellStats")
def _bms_cell_stats(v: Vehicle) -> Values:
    millivolts = [round(volts * 1000) for volts in v.cell_volts]
    high, low = max(millivolts), min(millivolts)
    return {"MaxCellVoltage": high, "MinCellVoltage": low,
            "MaxCellVoltageId": millivolts.index(high) + 1,
            "MinCellVoltageId": millivolts.index(low) + 1, "CellVoltageDelta": high - low,
            "MaxModuleTemp": max(v.module_temps), "MinModuleTemp": min(v.module_temps)}


@provides("BMS_CellVoltages")
def _bms_cells(v: Vehicle) -> Values:
    return {f"CellVoltage_{i:02d}": volts * 1000 for i, volts in enumerate(v.cell_volts, 1)}


@provides("BMS_CellTemps")
def _bms_temps(v: Vehicle) -> Values:
    return {f"ModuleTemp_{i // SENSORS_PER_MODULE + 1:02d}_{i % SENSORS_PER_MODULE + 1}": t
            for i, t in enumerate(v.module_temps)}


@provides("BMS_Energy")
def _bms_energy(v: Vehicle) -> Values:
    return {"RemainingEnergy": v.soc / 100 * USABLE_KWH, "FullCapacityEnergy": USABLE_KWH}


@provides("BMS_Lifetime")
def _bms_lifetime(v: Vehicle) -> Values:
    return {"TotalChargedEnergy": v.lifetime_charged,
            "TotalDischargedEnergy": v.lifetime_discharged}


CHARGING_STATES = {"Idle": "Connected", "Handshake": "Connected", "CableCheck": "Connected",
                   "Precharge": "Connected", "Charging": "Charging"}


@provides("CHG_Status")
def _chg_status(v: Vehicle) -> Values:
    if not v.plugged:
        return {"ChargingState": "NotConnected", "ChargePortDoor": v.charge_port_open}
    power = v.charge_power / 1000
    to_full = (100 - v.soc) / 100 * USABLE_KWH / power * 60 if power > 1 else 0.0
    return {"ChargingState": CHARGING_STATES[v.charge_stage], "ChargePower": power,
            "ChargerType": "DC_CCS", "PlugLocked": v.charge_stage != "Idle",
            "ChargePortDoor": True, "TimeToFull": to_full}


@provides("CHG_DC")
def _chg_dc(v: Vehicle) -> Values:
    if not v.plugged:
        return {}
    return {"DCChargeVoltage": v.pack_voltage if v.hv_on else 0.0,
            "DCChargeCurrent": max(-v.current, 0.0), "EVSEMaxVoltage": 500,
            "EVSEMaxCurrent": 125, "EVSEMaxPower": 50, "DCChargeState": v.charge_stage,
            "EVSEIsolationStatus": "Valid" if v.charge_stage != "Idle" else "Invalid"}


@provides("EPS_SteeringAngle")
def _eps_angle(v: Vehicle) -> Values:
    return {"SteeringWheelAngle": v.steering_angle, "SteeringWheelSpeed": v.steering_speed}


@provides("EPS_Status")
def _eps_status(v: Vehicle) -> Values:
    driver = 0.35 * v.speed**2 * v.curvature + 6 * v.turn_curvature
    assist = 4 * driver
    return {"DriverTorque": driver, "AssistTorque": assist,
            "EPS_MotorCurrent": 2 + 1.5 * abs(assist),
            "EPS_State": "Active" if v.speed > 0.05 else "Ready",
            "LKA_TorqueAccepted": lka_active(v), "HandsOnDetected": v.driver_seated}


@provides("ESP_WheelSpeeds")
def _esp_wheels(v: Vehicle) -> Values:
    return {f"WheelSpeed_{c}": speed * KMH for c, speed in v.wheel_speed.items()}


@provides("ESP_VehicleSpeed")
def _esp_speed(v: Vehicle) -> Values:
    moving = v.speed > 0.05
    return {"VehicleSpeed": v.kmh, "DirectionOfTravel": "Forward" if moving else "Standstill",
            "VehicleStandstill": not moving}


@provides("ESP_Dynamics")
def _esp_dynamics(v: Vehicle) -> Values:
    return {"YawRate": math.degrees(v.speed * v.curvature),
            "LateralAccel": v.speed**2 * v.curvature, "LongitudinalAccel": v.accel}


@provides("ESP_Brake")
def _esp_brake(v: Vehicle) -> Values:
    return {"BrakePressure": v.brake_pressure, "FrictionBrakeTorque": v.friction_torque,
            "RegenTorqueAllowed": REGEN_MAX * min(1.0, v.kmh / 8),
            "BrakeLightRequest": v.brake_pressure > 1.0 or v.accel < -1.3,
            "AutoHoldActive": v.brake_hold and v.speed < 0.05 and v.gear == "D"}


@provides("ESP_WheelPulses")
def _esp_pulses(v: Vehicle) -> Values:
    direction = "Forward" if v.speed > 0.05 else "Standstill"
    values: Values = {f"WheelPulse_{c}": int(turns * SENSOR_TEETH) % 256
                      for c, turns in v.wheel_turns.items()}
    return values | {f"WheelDirection_{c}": direction for c in CORNERS}


@provides("ESP_Status")
def _esp_status(v: Vehicle) -> Values:
    return {"BrakeDiscTempFront": v.disc_front, "BrakeDiscTempRear": v.disc_rear}


@provides("EPB_Status")
def _epb(v: Vehicle) -> Values:
    return {"ParkingBrakeState": "Applied" if v.parking_brake else "Released",
            "ParkingBrakeForce": 16.0 if v.parking_brake else 0.0}


@provides("SUS_Height")
def _sus_height(v: Vehicle) -> Values:
    return {f"SuspHeight_{c}": height for c, height in v.heights.items()}


@provides("SUS_Damping")
def _sus_damping(v: Vehicle) -> Values:
    values: Values = {f"DamperCurrent_{c}": 700 + 5 * v.kmh + 400 * abs(v.body_accel[c])
                      for c in CORNERS}
    return values | {"SUS_ActuatorState": "Active"}


def pitch_angle(v: Vehicle) -> float:
    """Degrees, nose up positive, from the ride heights."""
    h = v.heights
    rise = ((h["FL"] + h["FR"]) - (h["RL"] + h["RR"])) / 2 / 1000
    return math.degrees(math.atan(rise / WHEELBASE))


@provides("SUS_Accel")
def _sus_accel(v: Vehicle) -> Values:
    h = v.heights
    drop = ((h["FL"] + h["RL"]) - (h["FR"] + h["RR"])) / 2 / 1000
    return {"BodyAccel_FL": v.body_accel["FL"], "BodyAccel_FR": v.body_accel["FR"],
            "BodyAccel_RL": v.body_accel["RL"], "PitchAngle": pitch_angle(v),
            "RollAngle": math.degrees(math.atan(drop / TRACK))}


@provides("SUS_Status")
def _sus_status(v: Vehicle) -> Values:
    return {"HeadlightLevelingAngle": -pitch_angle(v),
            "VehicleLoadEstimate": v.load + (DRIVER if v.driver_seated else 0.0)}


def tire_pressure(v: Vehicle, corner: str) -> float:
    hot = (COLD_PRESSURE + ATMOSPHERE) * (v.tire_temp[corner] + 273.15) / (AMBIENT + 273.15)
    rear = corner.startswith("R")
    load = v.load * (REAR_PRESSURE_RISE if rear else 0.004)
    driver = 1.0 if v.driver_seated and corner == "FL" else 0.0
    return hot - ATMOSPHERE + load + driver


@provides("TPMS_Status")
def _tpms(v: Vehicle) -> Values:
    values: Values = {f"TirePressure_{c}": tire_pressure(v, c) for c in CORNERS}
    return values | {f"TireTemp_{c}": v.tire_temp[c] for c in CORNERS}


@provides("BCM_Doors")
def _bcm_doors(v: Vehicle) -> Values:
    values: Values = {f"DoorOpen_{c}": v.doors[c] for c in CORNERS}
    values |= {f"DoorLocked_{c}": not v.unlocked for c in CORNERS}
    latch = "Latched" if v.trunk == 0 else "Unlatched" if v.trunk == 1 else "Moving"
    return values | {"TrunkOpen": v.trunk > 0, "TrunkPosition": 100 * v.trunk,
                     "TrunkLatch": latch,
                     "CentralLockState": "Unlocked" if v.unlocked else "Locked"}


@provides("BCM_Lights")
def _bcm_lights(v: Vehicle) -> Values:
    blink = (v.t % 0.66) < 0.33
    return {"DaytimeRunningLights": v.ignition == "On",
            "TurnSignalLeft": v.turn == "Left" and blink,
            "TurnSignalRight": v.turn == "Right" and blink,
            "BrakeLights": v.brake_pressure > 1.0 or v.accel < -1.3,
            "ReverseLights": v.gear == "R",
            "InteriorLight": any(v.doors.values()) or v.trunk > 0}


@provides("BCM_Seats")
def _bcm_seats(v: Vehicle) -> Values:
    return {"SeatOccupied_FL": v.driver_seated, "SeatbeltFastened_FL": v.belt,
            "SeatHeat_FL": "Low" if v.climate_on and v.cabin_temp < 19 else "Off"}


@provides("BCM_Keyless")
def _bcm_keyless(v: Vehicle) -> Values:
    return {"KeyPresent": v.key_location != "None", "KeyLocation": v.key_location,
            "RemoteCommand": v.remote, "AlarmState": "Disarmed" if v.unlocked else "Armed",
            "ImmobilizerState": "Authenticated" if v.ignition != "Off" else "Locked",
            "WelcomeLight": v.remote == "Unlock"}


@provides("BCM_Power")
def _bcm_power(v: Vehicle) -> Values:
    buck = v.hv_on
    return {"BCM_BatteryVoltage": 14.1 if buck else 12.5,
            "BCM_BatteryCurrent": 6.5 if buck else -3.2,
            "SleepCountdown": 0 if v.unlocked or v.hv_on else 120}


@provides("HVAC_Status")
def _hvac_status(v: Vehicle) -> Values:
    return {"CabinTemp": v.cabin_temp, "OutsideTemp": AMBIENT + 0.002 * v.t,
            "FanSpeed": round(2 + 5 * v.heat_demand) if v.climate_on else 0,
            "ClimateOn": v.climate_on}


@provides("HVAC_Compressor")
def _hvac_compressor(v: Vehicle) -> Values:
    if not v.climate_on or v.heat_demand == 0:
        return {}
    return {"CompressorSpeed": 1500 + 3500 * v.heat_demand,
            "CompressorPower": 400 + 1600 * v.heat_demand, "CompressorState": "Running",
            "RefrigerantPressureHigh": 9 + 8 * v.heat_demand,
            "RefrigerantPressureLow": 3.2, "EvaporatorTemp": 4.0,
            "CompressorDischargeTemp": 45 + 30 * v.heat_demand,
            "ExpansionValvePosition": 40}


@provides("HVAC_Heater")
def _hvac_heater(v: Vehicle) -> Values:
    if not v.climate_on:
        return {}
    fan = 2 + 5 * v.heat_demand
    return {"PTCHeaterPower": 1200 * max(v.heat_demand - 0.5, 0.0) * 2,
            "HeatPumpMode": "Heating" if v.heat_demand > 0 else "Off",
            "HeaterCoolantTemp": v.cabin_temp + 25 * v.heat_demand, "BlowerPower": 25 * fan,
            "BlowerSpeed": 450 * fan}


@provides("HVAC_Sensors")
def _hvac_sensors(v: Vehicle) -> Values:
    outlet = v.cabin_temp + (20 * v.heat_demand if v.climate_on else 0.0)
    return {"DuctTempVentLeft": outlet, "DuctTempVentRight": outlet,
            "DuctTempFoot": outlet + 3 * v.heat_demand,
            "CO2Level": 480 + (160 if v.driver_seated else 0)}


@dataclass(frozen=True)
class Target:
    """An object the radar and camera track."""

    distance: float
    rel_velocity: float
    lateral: float
    kind: str
    motion: str
    probability: float = 97.0


def lead_distance(t: float) -> tuple[float, float]:
    return 38 + 6 * math.sin(0.07 * t), 0.42 * math.cos(0.07 * t)


def targets(v: Vehicle) -> list[Target]:
    """What is around: traffic on the road, people and parked cars when standing."""
    t = v.t
    if v.speed < 0.5:
        crossing = ((t * 1.2) % 16) - 8
        return [Target(6.0, 0.0, 0.3, "Car", "Stopped"),
                Target(9.0, 0.0, crossing, "Pedestrian", "Crossing", 88)]
    found = []
    if v.kmh > 30:
        distance, rate = lead_distance(t)
        found.append(Target(distance, rate, 0.2 * math.sin(0.05 * t), "Car", "Moving"))
        found.append(Target(70 + 20 * math.sin(0.031 * t + 1), 0.62 * math.cos(0.031 * t + 1),
                            -3.6, "Truck", "Moving", 99))
    else:
        found.append(Target(25 + 3 * math.sin(0.2 * t), 0.6 * math.cos(0.2 * t), -2.2,
                            "Bicycle", "Moving", 84))
    oncoming = 150 - (t * (v.speed + 20)) % 170
    if 2 < oncoming < 150:
        found.append(Target(oncoming, -(v.speed + 20), 3.7, "Car", "Oncoming", 93))
    roadside = 120 - v.distance % 130
    if 2 < roadside < 120:
        found.append(Target(roadside, -v.speed, -5.5, "Unknown", "Stationary", 71))
    return found


@provides("ADAS_ObjectList")
def _adas_objects(v: Vehicle) -> Values:
    found = targets(v)
    values: Values = {"ObjectCount": len(found)}
    for index, target in enumerate(found, 1):
        prefix = f"Obj{index:02d}"
        values |= {f"{prefix}_Distance": target.distance,
                   f"{prefix}_RelVelocity": target.rel_velocity,
                   f"{prefix}_LateralPos": target.lateral, f"{prefix}_Class": target.kind,
                   f"{prefix}_ExistProb": target.probability, f"{prefix}_Motion": target.motion}
    return values


@provides("ADAS_ACC")
def _adas_acc(v: Vehicle) -> Values:
    if not v.acc_active:
        return {"ACC_State": "Standby" if v.drive_ready else "Off"}
    distance, rate = lead_distance(v.t)
    return {"ACC_State": "Active", "ACC_SetSpeed": CRUISE_KMH + 5, "ACC_TargetDetected": True,
            "ACC_TargetDistance": distance, "ACC_TargetSpeed": v.kmh + rate * KMH,
            "ACC_AccelRequest": v.accel}


@provides("ADAS_AEB")
def _adas_aeb(v: Vehicle) -> Values:
    found = targets(v)
    in_path = [t for t in found if abs(t.lateral) < 1.5 and t.rel_velocity < -0.5]
    moving = v.speed > 0.5
    ttc = min((t.distance / -t.rel_velocity for t in in_path), default=25.0)
    return {"AEB_State": "Armed" if moving else "Standby",
            "TimeToCollision": ttc if moving else 25.0,
            "PedestrianDetected": any(t.kind == "Pedestrian" for t in found)}


def lka_active(v: Vehicle) -> bool:
    return v.kmh > 60 and not v.turn


@provides("ADAS_LKA")
def _adas_lka(v: Vehicle) -> Values:
    if v.speed < 0.5:
        return {}
    return {"LKA_State": "Active" if lka_active(v) else "Standby",
            "LKA_TorqueRequest": 1.5 * math.sin(0.3 * v.t) * 0.3 if lka_active(v) else 0.0,
            "LaneLeftDetected": True, "LaneRightDetected": True, "LaneLeftType": "Dashed",
            "LaneRightType": "Solid" if v.kmh > 60 else "RoadEdge",
            "LaneOffset": 0.15 * math.sin(0.21 * v.t), "LaneWidth": 3.5,
            "LaneCurvature": 1000 * v.curvature}


@provides("ADAS_ParkAssist")
def _adas_park(v: Vehicle) -> Values:
    return {"ParkDistance_FCL": v.obstacle_front, "ParkDistance_FCR": v.obstacle_front + 8,
            "ParkDistance_RCL": v.obstacle_rear, "ParkDistance_RCR": v.obstacle_rear + 12}


@provides("ADAS_BSD")
def _adas_bsd(v: Vehicle) -> Values:
    return {"BSD_State": "Active" if v.kmh > 10 else "Off",
            "DoorOpenWarning": "Left" if v.doors["FL"] and v.speed < 0.5 and v.t % 20 < 4
            else "None"}


@provides("ADAS_TSR")
def _adas_tsr(v: Vehicle) -> Values:
    return {"SpeedLimitDetected": v.speed_limit, "TSR_State": "Active",
            "SpeedLimitSource": "Fused" if v.speed_limit else "None"}


@provides("ADAS_Status")
def _adas_status(v: Vehicle) -> Values:
    return {"CameraState": "OK", "RadarState": "OK", "UltrasonicState": "OK",
            "DriverMonitorState": "Attentive" if v.driver_seated else "Absent",
            "HandsOnWheel": "HandsOn" if v.driver_seated else "HandsOff"}


@provides("IC_Odometer")
def _ic_odometer(v: Vehicle) -> Values:
    km = v.distance / 1000
    return {"Odometer": START_ODOMETER + km, "TripA": 312.4 + km, "TripB": 4172.9 + km}


@provides("IC_Display")
def _ic_display(v: Vehicle) -> Values:
    on = v.ignition == "On"
    return {"DisplayedSpeed": v.kmh * 1.03,
            "Telltale_Seatbelt": on and v.driver_seated and not v.belt,
            "Telltale_ReadyToDrive": v.drive_ready,
            "Telltale_ParkingBrake": v.parking_brake and v.ignition != "Off",
            "Telltale_Charging": v.charging, "Telltale_ACC": v.acc_active,
            "Telltale_LaneAssist": lka_active(v), "RangeDisplayed": range_estimate(v)}


@provides("IC_Warnings")
def _ic_warnings(v: Vehicle) -> Values:
    ajar = any(v.doors.values()) and v.ignition == "On"
    unbelted = v.driver_seated and not v.belt and v.ignition == "On"
    return {"DoorAjarWarning": ajar, "SeatbeltReminder": "Visual" if unbelted else "Off",
            "Chime": "Door" if ajar else "Seatbelt" if unbelted else "None"}


@provides("IC_DateTime")
def _ic_clock(v: Vehicle) -> Values:
    now = datetime.fromtimestamp(v.epoch + v.t, UTC)
    return {"ClockYear": now.year, "ClockMonth": now.month, "ClockDay": now.day,
            "ClockHour": now.hour, "ClockMinute": now.minute, "ClockSecond": now.second}


NODES = ("VCU", "INV", "BMS", "CHG", "ESP", "EPS", "SUS", "TPMS", "BCM", "HVAC", "ADAS", "IC",
         "DIAG")


@provides("DIAG_EcuStates")
def _diag_states(v: Vehicle) -> Values:
    return {f"EcuState_{node}": "Running" if node in v.awake_since else "Sleep"
            for node in NODES}


@provides("DIAG_EcuInfo")
def _diag_info(v: Vehicle) -> Values:
    return {f"{node}_Uptime": v.t - since for node, since in v.awake_since.items()
            if node in NODES}


@provides("NM_BCM")
def _nm_bcm(v: Vehicle) -> Values:
    return {"NM_BCM_ActiveWakeup": True}


# ----------------------------------------------------------------------------------------
# Frames: values to raw integers within the DBC's ranges, counters, checksums, schedule.

def crc8_j1850(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0xFF


@dataclass(frozen=True)
class Drift:
    """A slow wander around the start value, for temperatures nobody models."""

    amplitude: float
    period: float
    phase: float

    def at(self, t: float) -> float:
        return self.amplitude * math.sin(2 * math.pi * t / self.period + self.phase)


@dataclass(frozen=True)
class SignalCodec:
    name: str
    scale: float
    offset: float
    low: float  # raw bounds, from the DBC's min/max and the bit length
    high: float
    is_float: bool
    labels: dict[str, int]
    start: float  # physical start value
    drift: Drift | None

    @staticmethod
    def build(signal: cantools.database.can.Signal, rng: random.Random) -> SignalCodec:
        bits_low = -(1 << (signal.length - 1)) if signal.is_signed else 0
        bits_high = (1 << (signal.length - 1)) - 1 if signal.is_signed else (
            1 << signal.length) - 1
        scale, offset = signal.scale, signal.offset
        low, high = float(bits_low), float(bits_high)
        if signal.minimum is not None:
            low = max(low, math.ceil((signal.minimum - offset) / scale - 1e-9))
        if signal.maximum is not None:
            high = min(high, math.floor((signal.maximum - offset) / scale + 1e-9))
        if signal.is_float:
            low, high = float(signal.minimum), float(signal.maximum)
        labels = {str(label): value for value, label in (signal.choices or {}).items()}
        raw_start = float(signal.raw_initial or 0)
        start = raw_start if signal.is_float else offset + raw_start * scale
        drift = None
        if signal.unit == "degC" and not labels:
            drift = Drift(rng.uniform(0.4, 1.5), rng.uniform(400, 1200),
                          rng.uniform(0, 2 * math.pi))
        return SignalCodec(signal.name, scale, offset, low, high, signal.is_float, labels,
                           start, drift)

    def raw(self, value: Value) -> float:
        if isinstance(value, str):
            return self.labels[value]
        if self.is_float:
            return min(max(float(value), self.low), self.high)
        raw = round((float(value) - self.offset) / self.scale)
        return min(max(raw, self.low), self.high)

    def resting(self, t: float) -> float:
        return self.start + (self.drift.at(t) if self.drift else 0.0)


class MessageEncoder:
    """Encodes one message from the model, page after page for multiplexed ones."""

    def __init__(self, message: Message, rng: random.Random) -> None:
        self.message = message
        self.provider = PROVIDERS.get(message.name)
        self.codecs = {s.name: SignalCodec.build(s, rng) for s in message.signals}
        self.pages = self._pages(message)
        self.counter = next((s.name for s in message.signals if s.name.endswith("_Counter")),
                            None)
        checksum = next((s for s in message.signals if s.name.endswith("_Checksum")), None)
        self.checksum_byte = checksum.start // 8 if checksum is not None else None
        self.sent = 0

    @staticmethod
    def _pages(message: Message) -> list[tuple[dict[str, int], list[str]]]:
        common: list[str] = []
        branches: dict[str, dict[int, list[str]]] = {}
        for node in message.signal_tree:
            if isinstance(node, str):
                common.append(node)
            else:
                branches.update(node)
        if not branches:
            return [({}, common)]
        (mux, pages), = branches.items()
        return [({mux: value}, common + [str(name) for name in names])
                for value, names in sorted(pages.items())]

    def encode(self, v: Vehicle) -> bytes:
        values = self.provider(v) if self.provider else {}
        unknown = values.keys() - self.codecs.keys()
        if unknown:
            raise KeyError(f"provider of {self.message.name} sets unknown signals {unknown}")
        selector, names = self.pages[self.sent % len(self.pages)]
        raw: dict[str, float] = dict(selector)
        for name in names:
            codec = self.codecs[name]
            raw[name] = codec.raw(values[name] if name in values else codec.resting(v.t))
        if self.counter:
            raw[self.counter] = self.sent % 16
        self.sent += 1
        data = bytearray(self.message.encode(raw, scaling=False, strict=False))
        if self.checksum_byte is not None:
            covered = data[:self.checksum_byte] + data[self.checksum_byte + 1:]
            data[self.checksum_byte] = crc8_j1850(bytes([self.message.frame_id & 0xFF]) + covered)
        return bytes(data)


def candump_line(stamp_us: int, channel: str, message: Message, data: bytes) -> str:
    frame_id = (f"{message.frame_id:08X}" if message.is_extended_frame
                else f"{message.frame_id:03X}")
    separator = "##1" if message.is_fd else "#"  # FD frames with bit rate switching
    return (f"({stamp_us // 1_000_000}.{stamp_us % 1_000_000:06d}) {channel} "
            f"{frame_id}{separator}{data.hex().upper()}\n")


Frame = tuple[float, Message, bytes]


def jitter(rng: random.Random, period: float) -> float:
    """ECU task scheduling and bus arbitration: about a millisecond, never a whole cycle."""
    spread = 0.0005 + 0.002 * period
    return min(max(rng.gauss(0, 1), -3.0), 3.0) * spread


def simulate(database: Database, duration: float, seed: int, epoch: float) -> Iterator[Frame]:
    """Every frame of the drive in time order: (seconds from the start, message, payload)."""
    rng = random.Random(seed)
    car = Car.build(rng)
    story = Story(duration)
    v = Vehicle(epoch=epoch)
    messages = list(database.messages)
    encoders = [MessageEncoder(message, rng) for message in messages]
    periods = [message.cycle_time / 1000 for message in messages]
    origins = [rng.uniform(0, period) for period in periods]
    counts = [0] * len(messages)
    schedule = [(origin, index) for index, origin in enumerate(origins)]
    heapq.heapify(schedule)
    story.act(v)
    physics(v, car, STEP, v.speed)  # so every derived value exists before the first frame
    update_awake(v, NODES)
    while schedule:
        when, index = heapq.heappop(schedule)
        if when >= duration:
            continue
        while v.t + STEP <= when:
            previous_speed = v.speed
            v.t += STEP
            story.act(v)
            physics(v, car, STEP, previous_speed)
            update_awake(v, NODES)
        message = messages[index]
        if awake(message.senders[0], v):
            yield when, message, encoders[index].encode(v)
        counts[index] += 1
        period = periods[index]
        heapq.heappush(schedule, (origins[index] + counts[index] * period + jitter(rng, period),
                                  index))


@contextlib.contextmanager
def open_output(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdout
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as file:
        if target.suffix != ".gz":
            with io.TextIOWrapper(file, encoding="ascii", newline="\n") as text:
                yield text
            return
        # mtime=0 and no file name in the header: the same drive gives the same bytes.
        with gzip.GzipFile(filename="", mode="wb", fileobj=file, mtime=0,
                           compresslevel=9) as packed, \
                io.TextIOWrapper(packed, encoding="ascii", newline="\n") as text:
            yield text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/simulate",
        description="Write a candump log of a plausible drive of the example EV: parked, "
                    "ignition on, cruise, a shop stop where the trunk is loaded, town, and a "
                    "DC charge. Frames are encoded from the DBC at their cycle times; the "
                    "same options give the same log.")
    parser.add_argument("--dbc", type=Path, default=DEFAULT_DBC,
                        help="the vehicle database (default: dbc/vehicle.dbc)")
    parser.add_argument("--duration", type=float, default=STORY_SECONDS,
                        help="seconds of drive; the story is scaled to fit (default: "
                             "%(default)g)")
    parser.add_argument("--seed", type=int, default=1,
                        help="seed for jitter, cell spread, sensor offsets (default: "
                             "%(default)s)")
    parser.add_argument("--start", type=float, default=DEFAULT_START,
                        help="epoch seconds of the first frame (default: %(default)s, "
                             "2026-06-01T08:00:00Z)")
    parser.add_argument("--channel", default="can0", help="channel name (default: can0)")
    parser.add_argument("--output", "-o", default="-",
                        help="the log: .log, or .log.gz to compress; - for stdout (default)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be positive")
    try:
        database = cantools.database.load_file(str(args.dbc), database_format="dbc",
                                               strict=True)
    except (OSError, cantools.database.UnsupportedDatabaseFormatError) as exc:
        parser.error(f"cannot load {args.dbc}: {exc}")
    missing = sorted(name for name in PROVIDERS if name not in
                     {message.name for message in database.messages})
    if missing:
        parser.error(f"{args.dbc} lacks messages the drive needs: {', '.join(missing)}")
    unscheduled = [message.name for message in database.messages if not message.cycle_time]
    if unscheduled:
        parser.error(f"{args.dbc}: no GenMsgCycleTime for {', '.join(unscheduled)}")
    start_us = round(args.start * 1_000_000)
    frames = 0
    try:
        with open_output(args.output) as output:
            for when, message, data in simulate(database, args.duration, args.seed,
                                                args.start):
                output.write(candump_line(start_us + round(when * 1_000_000), args.channel,
                                          message, data))
                frames += 1
    except BrokenPipeError:
        # The reader (head, less) has seen enough; keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.output != "-":
        print(f"{args.output}: {frames} frames, {args.duration:g} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
