"""Diagnostic trouble codes: their SAE J2012 names, their status and changes of the set.

UDS (0x19 ReadDTCInformation) reports a DTC as three bytes: two of the SAE code (P0301) and a
failure-type byte, with a status byte whose bits ISO 14229 D.2 defines. The agent keeps the
set each ECU reported last; `changes` compares two sets and says what a dealer wants to
know: a code appeared, was cleared, or went from pending to confirmed. Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# ISO 14229-1 D.2 status bits that matter here.
TEST_FAILED = 0x01
PENDING = 0x04
CONFIRMED = 0x08
WARNING_INDICATOR = 0x80  # the MIL ("check engine") is asked for

# Descriptions of a few generic (SAE J2012) codes; others show without one.
DESCRIPTIONS = {
    "P0128": "Coolant thermostat below regulating temperature",
    "P0171": "System too lean (bank 1)",
    "P0300": "Random/multiple cylinder misfire detected",
    "P0301": "Cylinder 1 misfire detected",
    "P0302": "Cylinder 2 misfire detected",
    "P0420": "Catalyst system efficiency below threshold (bank 1)",
    "P0A80": "Replace hybrid battery pack",
    "P0AFA": "Hybrid battery system voltage low",
    "U0100": "Lost communication with ECM/PCM",
}


def code_name(dtc_id: int) -> str:
    """P0301 for 0x030100; the failure-type byte follows when it is not 0 (P0301-1A)."""
    letter = "PCBU"[(dtc_id >> 22) & 3]
    name = f"{letter}{(dtc_id >> 20) & 3}{(dtc_id >> 8) & 0xFFF:03X}"
    return name if not dtc_id & 0xFF else f"{name}-{dtc_id & 0xFF:02X}"


def state(status: int) -> str:
    """`confirmed`, `pending` or `stored` (reported, neither bit set) for a status byte."""
    if status & CONFIRMED:
        return "confirmed"
    if status & PENDING:
        return "pending"
    return "stored"


def describe(code: str) -> str:
    return DESCRIPTIONS.get(code.split("-")[0], "")


@dataclass(frozen=True)
class DtcChange:
    """One change of one ECU's set: `change` is new | cleared | confirmed."""

    request: str  # the [[diagnostics.requests]] entry that read it (names the ECU)
    code: str
    change: str
    status: int
    state: str


def changes(request: str, before: Mapping[str, int] | None,
            after: Mapping[str, int]) -> list[DtcChange]:
    """What changed from `before` (code → status; None: never read) to `after`. The first
    read of an ECU reports every code it holds as new: the backend has not seen them."""
    before = before or {}
    found = []
    for code, status in sorted(after.items()):
        if code not in before:
            found.append(DtcChange(request, code, "new", status, state(status)))
        elif state(status) == "confirmed" and state(before[code]) != "confirmed":
            found.append(DtcChange(request, code, "confirmed", status, state(status)))
    found += [DtcChange(request, code, "cleared", status, "cleared")
              for code, status in sorted(before.items()) if code not in after]
    return found
