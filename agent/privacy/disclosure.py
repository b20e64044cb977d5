"""What a support bundle may show a technician, under the owner's consent.

A technician is not the backend: the owner's consent governs what the backend receives, and a
bundle must reveal no more than that, and never what the privacy controls exist to hide.

- **Zones** are withheld whatever the consent: their whole purpose is to hide places (home,
  work) from everyone, the backend included. Only how many there are is shown.
- **The pseudonym key** path is withheld (the key itself is never read into a bundle).
- **Secrets** (keys named password, secret, token) are withheld, as before.
- **The vehicle id** is replaced by `<vehicle>` in every member unless the backend sees it in
  payloads anyway: consent `off` (the owner shares nothing) or a pseudonym in use withholds it.
- **Signal values**, location or other, are in no member: the bundle holds counters, the
  config and the journal, never `diag signals`, `live` or `gps`.
- **Comments** of the config are left out: a commented-out zone is still the owner's home.

The config is redacted line by line, following TOML tables, so that support still sees the
file's shape and every other setting as written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECRET_WORDS = ("password", "secret", "token")
WITHHELD = '"<withheld>"'
VEHICLE_PLACEHOLDER = "<vehicle>"
_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"'.]+)\s*=")


@dataclass(frozen=True)
class Redacted:
    text: str
    withheld: tuple[str, ...]


def withholds_vehicle_id(consent_level: str, pseudonymous: bool) -> bool:
    return consent_level == "off" or pseudonymous


def redact_config(text: str) -> Redacted:
    """`text` (a config.toml) without zones, the pseudonym key, secrets and comments."""
    lines: list[str] = []
    table = ""
    zones = 0
    withheld: list[str] = []
    skipping_depth = 0  # open brackets of a withheld multi-line value
    comments = 0
    for line in text.splitlines():
        if skipping_depth:
            skipping_depth += _bracket_depth(line)
            continue
        stripped = line.strip()
        if stripped.startswith("#"):
            comments += 1
            continue
        header = _TABLE.match(line)
        if header:
            table = header.group(1).replace(" ", "")
            if table == "privacy.zones":
                zones += 1
            lines.append(line)
            continue
        key = _KEY.match(line)
        if key is None:
            lines.append(line)
            continue
        name = key.group(1).strip("\"'")
        if _withheld(table, name):
            value = line.split("=", 1)[1]
            skipping_depth = max(0, _bracket_depth(value))
            lines.append(f"{line.split('=', 1)[0]}= {WITHHELD}")
            if table == "privacy" and name == "zones":
                zones += 1
            elif table == "privacy.pseudonym":
                withheld.append("[privacy.pseudonym] key")
            elif not table.startswith("privacy.zones"):
                withheld.append(f"[{table}] {name}" if table else name)
            continue
        lines.append(line)
    if zones:
        withheld.insert(0, f"{zones} privacy zones (every value)")
    if comments:
        withheld.append(f"{comments} comment lines")
    return Redacted("\n".join(lines) + "\n", tuple(withheld))


def _withheld(table: str, key: str) -> bool:
    if table.startswith("privacy.zones") or (table == "privacy" and key == "zones"):
        return True
    if table == "privacy.pseudonym" and key == "key":
        return True
    return any(word in key.lower() for word in SECRET_WORDS)


def _bracket_depth(text: str) -> int:
    """Opened minus closed brackets outside strings and comments (enough for TOML arrays)."""
    depth = 0
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char == "#":
            break
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return depth


def without_vehicle_id(data: bytes, vehicle: str) -> tuple[bytes, int]:
    """`data` with every occurrence of `vehicle` replaced, and how many there were."""
    needle = vehicle.encode()
    return data.replace(needle, VEHICLE_PLACEHOLDER.encode()), data.count(needle)
