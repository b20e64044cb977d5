"""How the answer to a request becomes values: data items with size, scale, offset and unit.

A data identifier (UDS 0x22) or an OBD-II PID answers with bytes; a `DataItem` says how to
read them: `count` values of `size` bytes each (big-endian, as ISO 14229 and SAE J1979
send them), physical = raw * scale + offset. A DID of 96 cell voltages is one item with
count = 96, delivered as `<name>_1` .. `<name>_96`; `summary` adds `<name>_min`, `_max` and
`_spread` (max - min), what the battery-health event reads. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import AgentError

SUMMARIES = ("min", "max", "spread")


class DecodeError(AgentError):
    """An answer that does not fit its item (too short, too long)."""


@dataclass(frozen=True)
class DataItem:
    """One data identifier's (or PID's) content."""

    name: str
    size: int = 1
    count: int = 1
    signed: bool = False
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    summary: bool = False  # also `<name>_min`, `<name>_max`, `<name>_spread`

    @property
    def length(self) -> int:
        return self.size * self.count

    def quantities(self) -> Iterator[str]:
        """The names this item delivers, in order."""
        if self.count == 1:
            yield self.name
        else:
            yield from (f"{self.name}_{index}" for index in range(1, self.count + 1))
        if self.summary:
            yield from (f"{self.name}_{kind}" for kind in SUMMARIES)


def decode(item: DataItem, data: bytes) -> dict[str, float]:
    """The physical values of `item` in `data` (exactly `item.length` bytes)."""
    if len(data) != item.length:
        raise DecodeError(f"{item.name}: expected {item.length} bytes, got {len(data)}")
    raws = [int.from_bytes(data[at:at + item.size], "big", signed=item.signed)
            for at in range(0, item.length, item.size)]
    values = [raw * item.scale + item.offset for raw in raws]
    names = list(item.quantities())
    decoded = dict(zip(names, values, strict=False))
    if item.summary:
        low, high = min(values), max(values)
        decoded.update({f"{item.name}_min": low, f"{item.name}_max": high,
                        f"{item.name}_spread": high - low})
    return decoded


def encode(item: DataItem, values: list[float]) -> bytes:
    """The bytes an ECU sends for `values` (the simulator's side; round trip in the tests)."""
    out = bytearray()
    for value in values:
        raw = round((value - item.offset) / item.scale)
        out += raw.to_bytes(item.size, "big", signed=item.signed)
    return bytes(out)
