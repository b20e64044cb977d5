"""A CAN database as the agent reads it: per message and signal the values that planning,
checking and decoding use, as plain frozen values that need no cantools.

Importing cantools imports python-can too (its `tester`), ~0.15 s and more before any work;
building its `Message` objects (their codecs) for a 931-signal DBC takes another ~0.1 s.
`edge-agent config check`, `diag selftest` and the sampling plan need neither: they read
names, frame IDs and conversions, which these tables hold. The DBC cache
(agent/decoding/cache.py) stores them, and cantools objects are built from them only where
frames are decoded (agent/decoding/database.py).

The attribute names are cantools' own (`frame_id`, `is_multiplexer`, `scale`, `choices`, ...),
so the code that only reads them (agent/sampling/plan.py) takes a `DbcTables` or a cantools
`Database` alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cantools.database.can import Database

BYTE_ORDERS = ("little_endian", "big_endian")


@dataclass(frozen=True, slots=True)
class SignalTable:
    """One signal: its bit layout, conversion (raw values, choices), limits and multiplexing."""

    name: str
    start: int
    length: int
    byte_order: str
    is_signed: bool
    is_float: bool
    scale: int | float
    offset: int | float
    choices: Mapping[int, str] | None
    raw_initial: int | float | None
    raw_invalid: int | float | None
    minimum: int | float | None
    maximum: int | float | None
    unit: str | None
    is_multiplexer: bool
    multiplexer_ids: tuple[int, ...] | None
    multiplexer_signal: str | None


@dataclass(frozen=True, slots=True)
class MessageTable:
    frame_id: int
    name: str
    length: int
    is_extended_frame: bool
    is_fd: bool
    unused_bit_pattern: int
    signals: tuple[SignalTable, ...]


@dataclass(frozen=True)
class DbcTables:
    """The messages of one source's DBCs, in the order cantools' loader left them."""

    messages: tuple[MessageTable, ...]


def tables_of(database: Database) -> DbcTables:
    """The tables of a database cantools parsed (reads its attributes; imports nothing)."""
    return DbcTables(tuple(
        MessageTable(frame_id=message.frame_id, name=message.name, length=message.length,
                     is_extended_frame=message.is_extended_frame, is_fd=message.is_fd,
                     unused_bit_pattern=message.unused_bit_pattern,
                     signals=tuple(_signal_of(signal) for signal in message.signals))
        for message in database.messages))


def _signal_of(signal: Any) -> SignalTable:
    conversion = signal.conversion
    choices = conversion.choices
    return SignalTable(
        name=signal.name, start=signal.start, length=signal.length,
        byte_order=signal.byte_order, is_signed=signal.is_signed,
        is_float=conversion.is_float, scale=conversion.scale, offset=conversion.offset,
        choices=None if choices is None else {int(value): str(named)
                                              for value, named in choices.items()},
        raw_initial=signal.raw_initial, raw_invalid=signal.raw_invalid,
        minimum=signal.minimum, maximum=signal.maximum, unit=signal.unit,
        is_multiplexer=signal.is_multiplexer,
        multiplexer_ids=None if signal.multiplexer_ids is None else
        tuple(signal.multiplexer_ids),
        multiplexer_signal=signal.multiplexer_signal)


def to_plain(tables: DbcTables) -> list[dict[str, Any]]:
    """The tables as JSON values (the cache's `messages`); equal plain forms decode alike."""
    return [{"frame_id": message.frame_id, "name": message.name, "length": message.length,
             "extended": message.is_extended_frame, "fd": message.is_fd,
             "unused": message.unused_bit_pattern,
             "signals": [_plain_signal(signal) for signal in message.signals]}
            for message in tables.messages]


def _plain_signal(signal: SignalTable) -> dict[str, Any]:
    return {"name": signal.name, "start": signal.start, "length": signal.length,
            "byte_order": signal.byte_order, "signed": signal.is_signed,
            "float": signal.is_float, "scale": signal.scale, "offset": signal.offset,
            # [raw value, name] pairs: JSON objects would make the raw values strings.
            "choices": None if signal.choices is None else
            [[value, named] for value, named in signal.choices.items()],
            "initial": signal.raw_initial, "invalid": signal.raw_invalid,
            "minimum": signal.minimum, "maximum": signal.maximum, "unit": signal.unit,
            "multiplexer": signal.is_multiplexer,
            "mux_ids": None if signal.multiplexer_ids is None else
            list(signal.multiplexer_ids),
            "mux_signal": signal.multiplexer_signal}


def from_plain(messages: Sequence[Any]) -> DbcTables:
    """Tables from their JSON values; ValueError (or KeyError, TypeError) for anything that
    is not such a value. A damaged cache entry can hold anything JSON can, and nothing
    downstream checks types (a length "8" would fail only when a frame is decoded), so each
    value is checked here: by its exact type, which JSON values have one of (a bool is no
    integer here), in one loop per table, since this runs for every signal at each start."""
    return DbcTables(tuple(_message(table) for table in as_type(messages, list)))


_NONE = type(None)
_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_TEXT = frozenset({str})
_FLAG = frozenset({bool})
_LIST = frozenset({list, _NONE})  # choices and multiplexer IDs, checked item by item

# Each field's JSON key and types, in the order of the table's fields.
_MESSAGE_FIELDS = (("frame_id", _INT), ("name", _TEXT), ("length", _INT), ("extended", _FLAG),
                   ("fd", _FLAG), ("unused", _INT), ("signals", frozenset({list})))
_SIGNAL_FIELDS = (("name", _TEXT), ("start", _INT), ("length", _INT), ("byte_order", _TEXT),
                  ("signed", _FLAG), ("float", _FLAG), ("scale", _NUMBER), ("offset", _NUMBER),
                  ("choices", _LIST), ("initial", _NUMBER | {_NONE}),
                  ("invalid", _NUMBER | {_NONE}), ("minimum", _NUMBER | {_NONE}),
                  ("maximum", _NUMBER | {_NONE}), ("unit", _TEXT | {_NONE}),
                  ("multiplexer", _FLAG), ("mux_ids", _LIST), ("mux_signal", _TEXT | {_NONE}))


def _checked(table: dict[str, Any], fields: tuple[tuple[str, frozenset[type]], ...]
             ) -> list[Any]:
    values = [table[key] for key, _ in fields]
    for value, (key, kinds) in zip(values, fields, strict=True):
        if type(value) not in kinds:
            raise ValueError(f"{key}: {value!r} is not one of {sorted(k.__name__ for k in kinds)}")
    return values


def _message(table: dict[str, Any]) -> MessageTable:
    values = _checked(table, _MESSAGE_FIELDS)
    values[-1] = tuple(_signal(signal) for signal in values[-1])
    return MessageTable(*values)


def _signal(table: dict[str, Any]) -> SignalTable:
    values = _checked(table, _SIGNAL_FIELDS)
    if values[3] not in BYTE_ORDERS:
        raise ValueError(f"byte order {values[3]!r}")
    if values[8] is not None:
        values[8] = {as_int(value): as_type(name, str) for value, name in values[8]}
    if values[15] is not None:
        values[15] = tuple(as_int(value) for value in values[15])
    return SignalTable(*values)


# The checks of a value read from JSON, which can be anything.

def as_type(value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{value!r} is not a {kind.__name__}")
    return value


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value
