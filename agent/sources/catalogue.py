"""What a non-CAN source declares instead of a DBC: the quantities it measures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CatalogueSignal:
    """One quantity a value source can deliver, keyed `<source>.<quantity>` in the plan.

    Floats travel as float64; integers as round((value - offset) / scale), like DBC signals.
    """

    quantity: str
    unit: str
    is_float: bool = False
    scale: int | float = 1
    offset: int | float = 0
    choices: Mapping[int, str] | None = None


Catalogue = tuple[CatalogueSignal, ...]
