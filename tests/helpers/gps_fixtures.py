"""NMEA 0183 logs for gpsfake: the scenarios the gpsd tests replay (tests/data/gps/*.nmea).

    python -m tests.helpers.gps_fixtures     # rewrites the shipped files

Each epoch is one second of receiver output: RMC (position, speed, date), GGA (fix quality,
altitude), GSA (fix mode, DOPs) and GSV (satellites in view).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "data" / "gps"
START = datetime(2026, 1, 15, 12, 0, 0, tzinfo=UTC)
ORIGIN = (48.137154, 11.576124)  # Munich
KNOTS_PER_MPS = 1 / 0.514444
SATELLITES = (3, 6, 9, 12, 17, 19, 22, 28)


@dataclass(frozen=True)
class Epoch:
    lat: float
    lon: float
    speed_mps: float
    track: float
    mode: int  # 1 no fix, 2 2D, 3 3D
    altitude: float = 519.4
    hdop: float = 0.9


def _checksummed(body: str) -> str:
    checksum = 0
    for byte in body.encode("ascii"):
        checksum ^= byte
    return f"${body}*{checksum:02X}\r\n"


def _angle(value: float, degree_digits: int, hemispheres: str) -> tuple[str, str]:
    hemisphere = hemispheres[0] if value >= 0 else hemispheres[1]
    value = abs(value)
    degrees = int(value)
    minutes = (value - degrees) * 60
    return f"{degrees:0{degree_digits}d}{minutes:07.4f}", hemisphere


def sentences(epoch: Epoch, at: datetime) -> str:
    clock = at.strftime("%H%M%S.00")
    date = at.strftime("%d%m%y")
    used = SATELLITES[:7] if epoch.mode == 3 else SATELLITES[:3] if epoch.mode == 2 else ()
    gsv = _checksummed(f"GPGSV,1,1,{len(used):02d}," + ",".join(
        f"{prn:02d},45,{(prn * 40) % 360:03d},40" for prn in used[:4]))
    if epoch.mode == 1:
        return (_checksummed(f"GPRMC,{clock},V,,,,,,,{date},,,N")
                + _checksummed(f"GPGGA,{clock},,,,,0,00,99.99,,,,,,")
                + _checksummed("GPGSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99") + gsv)
    lat, ns = _angle(epoch.lat, 2, "NS")
    lon, ew = _angle(epoch.lon, 3, "EW")
    knots = epoch.speed_mps * KNOTS_PER_MPS
    altitude = f"{epoch.altitude:.1f},M,47.0,M" if epoch.mode == 3 else ",,,"
    prns = ",".join(f"{prn:02d}" for prn in used) + "," * (12 - len(used))
    return (_checksummed(f"GPRMC,{clock},A,{lat},{ns},{lon},{ew},{knots:.2f},"
                         f"{epoch.track:.1f},{date},,,A")
            + _checksummed(f"GPGGA,{clock},{lat},{ns},{lon},{ew},1,{len(used):02d},"
                           f"{epoch.hdop:.1f},{altitude},,")
            + _checksummed(f"GPGSA,A,{epoch.mode},{prns},1.5,{epoch.hdop:.1f},1.2") + gsv)


def drive(segments: list[tuple[int, float, int]]) -> list[Epoch]:
    """Epochs driving east from ORIGIN: (seconds, speed m/s, fix mode) per segment."""
    lat, lon = ORIGIN
    epochs = []
    for seconds, speed, mode in segments:
        for _ in range(seconds):
            epochs.append(Epoch(lat, lon, speed, 90.0, mode))
            lon += speed / (111_320 * math.cos(math.radians(lat)))
    return epochs


SCENARIOS = {
    # drive, stop at a light for 8 s, drive on
    "drive_with_stop": drive([(8, 12.0, 3), (8, 0.0, 3), (8, 12.0, 3)]),
    # a tunnel: the fix is lost for 8 s, then comes back
    "fix_loss": drive([(8, 15.0, 3), (8, 15.0, 1), (8, 15.0, 3)]),
    # power-up: no fix, then a 2D fix, then 3D
    "cold_start": drive([(6, 0.0, 1), (6, 0.0, 2), (8, 0.0, 3)]),
}


def render(epochs: list[Epoch], start: datetime = START) -> str:
    return "".join(sentences(epoch, start + timedelta(seconds=n))
                   for n, epoch in enumerate(epochs))


def main() -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for name, epochs in SCENARIOS.items():
        (DATA / f"{name}.nmea").write_text(render(epochs), encoding="ascii", newline="")


if __name__ == "__main__":
    main()
