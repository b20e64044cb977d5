"""Serial sensor protocols: bytes from a tire-pressure or suspension sensor → measurements.

Each protocol is a small stateful decoder (it sees the byte stream in whatever pieces the
serial port delivers) registered by name; `[[sources]] protocol = "<name>"` picks one. Every
piece of input a decoder drops comes back as a `Rejected` with a reason, so that it is counted
in the source's health (`rejected.<reason>`), never silently lost. docs/sensors.md describes
both protocols byte by byte.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from agent.errors import ConfigError
from agent.sources.catalogue import Catalogue, CatalogueSignal

WHEELS = ("FL", "FR", "RL", "RR")

# Physical limits: a value outside them is a broken sensor or a corrupted line, never data.
PRESSURE_KPA = (0.0, 1000.0)
TEMPERATURE_C = (-40.0, 150.0)
BATTERY_V = (0.0, 5.0)
HEIGHT_MM = (0.0, 1000.0)

TPMS_CATALOGUE: Catalogue = tuple(
    signal for wheel in WHEELS for signal in (
        CatalogueSignal(f"{wheel}.pressure", "kPa", scale=0.1),
        CatalogueSignal(f"{wheel}.temperature", "degC", scale=0.1),
        CatalogueSignal(f"{wheel}.battery", "V", scale=0.01)))
SUSPENSION_CATALOGUE: Catalogue = tuple(
    CatalogueSignal(f"{corner}.height", "mm", scale=0.1) for corner in WHEELS)


@dataclass(frozen=True, slots=True)
class Measurement:
    quantity: str
    value: float


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str


Decoded = Measurement | Rejected


class SensorProtocol(ABC):
    """Turns a byte stream into measurements; one instance per open port."""

    name: ClassVar[str]
    catalogue: ClassVar[Catalogue]

    @abstractmethod
    def feed(self, data: bytes) -> list[Decoded]:
        """Decode what `data` completes; keep an unfinished tail for the next call."""

    @abstractmethod
    def reset(self) -> None:
        """Forget a partial line or frame (the port was closed and reopened)."""


def _in_range(value: float, limits: tuple[float, float]) -> bool:
    return math.isfinite(value) and limits[0] <= value <= limits[1]


class NmeaSentences(SensorProtocol):
    """NMEA 0183-style checksummed ASCII sentences, one per line:

    `$TPMS,<wheel>,<kPa>,<degC>,<volts>*hh` and `$SUSP,<corner>,<mm>*hh`, where hh is the XOR
    of every byte between `$` and `*`, as two hex digits.
    """

    name = "nmea"
    catalogue = TPMS_CATALOGUE + SUSPENSION_CATALOGUE
    MAX_LINE = 82  # NMEA 0183's limit, including "$" and "\r\n"
    _NUMBER = re.compile(r"-?\d{1,7}(\.\d{1,6})?")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._skipping = False  # inside an over-long line: drop up to its end

    def reset(self) -> None:
        self._buffer.clear()
        self._skipping = False

    def feed(self, data: bytes) -> list[Decoded]:
        decoded: list[Decoded] = []
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                if len(buffer) > self.MAX_LINE and not self._skipping:
                    decoded.append(Rejected("too_long"))
                    self._skipping = True
                if self._skipping:
                    buffer.clear()
                return decoded
            line = bytes(buffer[:end])
            del buffer[:end + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) + 1 > self.MAX_LINE:
                decoded.append(Rejected("too_long"))
                continue
            decoded.extend(self.parse_line(line.rstrip(b"\r")))

    def parse_line(self, line: bytes) -> list[Decoded]:
        if not line:
            return []
        if not line.startswith(b"$") or not line.isascii():
            return [Rejected("garbage")]
        body, star, checksum = line[1:].decode("ascii").partition("*")
        if not star or len(checksum) != 2 or not all(c in "0123456789ABCDEFabcdef"
                                                     for c in checksum):
            return [Rejected("malformed")]
        expected = 0
        for byte in body.encode("ascii"):
            expected ^= byte
        if int(checksum, 16) != expected:
            return [Rejected("bad_checksum")]
        fields = body.split(",")
        if fields[0] == "TPMS":
            return self._tpms(fields[1:])
        if fields[0] == "SUSP":
            return self._suspension(fields[1:])
        return [Rejected("unknown_sentence")]

    def _numbers(self, fields: list[str]) -> list[float] | None:
        if not all(self._NUMBER.fullmatch(field) for field in fields):
            return None
        return [float(field) for field in fields]

    def _tpms(self, fields: list[str]) -> list[Decoded]:
        if len(fields) != 4:
            return [Rejected("malformed")]
        wheel = fields[0]
        numbers = self._numbers(fields[1:])
        if numbers is None:
            return [Rejected("malformed")]
        if wheel not in WHEELS:
            return [Rejected("unknown_wheel")]
        return _tpms_measurements(wheel, *numbers)

    def _suspension(self, fields: list[str]) -> list[Decoded]:
        if len(fields) != 2:
            return [Rejected("malformed")]
        numbers = self._numbers(fields[1:])
        if numbers is None:
            return [Rejected("malformed")]
        if fields[0] not in WHEELS:
            return [Rejected("unknown_wheel")]
        if not _in_range(numbers[0], HEIGHT_MM):
            return [Rejected("out_of_range")]
        return [Measurement(f"{fields[0]}.height", numbers[0])]


def _tpms_measurements(wheel: str, pressure: float, temperature: float,
                       battery: float) -> list[Decoded]:
    if not (_in_range(pressure, PRESSURE_KPA) and _in_range(temperature, TEMPERATURE_C)
            and _in_range(battery, BATTERY_V)):
        return [Rejected("out_of_range")]
    return [Measurement(f"{wheel}.pressure", pressure),
            Measurement(f"{wheel}.temperature", temperature),
            Measurement(f"{wheel}.battery", battery)]


def crc16_ccitt(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


class TpmsBinaryFrames(SensorProtocol):
    """Fixed 10-byte frames as cheap 433 MHz TPMS receivers emit them:

    `55 AA | wheel | pressure u16 BE (0.1 kPa) | temperature u8 (degC + 50) |
    battery u8 (0.02 V) | flags | CRC-16/CCITT-FALSE u16 BE over bytes 2..7`.
    """

    name = "tpms-binary"
    catalogue = TPMS_CATALOGUE
    SYNC = b"\x55\xaa"
    LENGTH = 10

    def __init__(self) -> None:
        self._buffer = bytearray()

    def reset(self) -> None:
        self._buffer.clear()

    def feed(self, data: bytes) -> list[Decoded]:
        decoded: list[Decoded] = []
        buffer = self._buffer
        buffer += data
        while True:
            start = buffer.find(self.SYNC)
            if start < 0:
                # Keep a last byte that may be the first half of a sync word.
                keep = 1 if buffer[-1:] == self.SYNC[:1] else 0
                if len(buffer) > keep:
                    decoded.append(Rejected("garbage"))
                    del buffer[:len(buffer) - keep]
                return decoded
            if start > 0:
                decoded.append(Rejected("garbage"))
                del buffer[:start]
            if len(buffer) < self.LENGTH:
                return decoded
            frame = bytes(buffer[:self.LENGTH])
            if crc16_ccitt(frame[2:8]) != int.from_bytes(frame[8:10], "big"):
                decoded.append(Rejected("bad_crc"))
                del buffer[:1]  # resynchronise on the next sync word
                continue
            del buffer[:self.LENGTH]
            decoded.extend(self._measurements(frame))

    @staticmethod
    def _measurements(frame: bytes) -> list[Decoded]:
        if frame[2] >= len(WHEELS):
            return [Rejected("unknown_wheel")]
        return _tpms_measurements(WHEELS[frame[2]],
                                  int.from_bytes(frame[3:5], "big") / 10,
                                  frame[5] - 50, frame[6] * 0.02)


def encode_tpms_frame(wheel: str, pressure_kpa: float, temperature_c: float, battery_v: float,
                      flags: int = 0) -> bytes:
    """One `tpms-binary` frame (what the receiver sends; the tests' sensor emulator uses it)."""
    payload = (bytes([WHEELS.index(wheel)]) + round(pressure_kpa * 10).to_bytes(2, "big")
               + bytes([round(temperature_c) + 50, round(battery_v / 0.02), flags]))
    return TpmsBinaryFrames.SYNC + payload + crc16_ccitt(payload).to_bytes(2, "big")


def nmea_sentence(body: str) -> bytes:
    """`body` framed as `$body*hh\\r\\n` with its checksum."""
    checksum = 0
    for byte in body.encode("ascii"):
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n".encode("ascii")


PROTOCOLS: dict[str, type[SensorProtocol]] = {
    protocol.name: protocol for protocol in (NmeaSentences, TpmsBinaryFrames)}


def protocol_class(name: str) -> type[SensorProtocol]:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ConfigError(f"unknown serial protocol {name!r}; known: "
                          f"{', '.join(sorted(PROTOCOLS))}") from None
