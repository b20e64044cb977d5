"""cantools objects from the agent's own tables: what decodes frames when the DBC came from the
cache instead of cantools' parser.

The same constructors the DBC loader calls, with the values it passes, so cantools builds the
same codecs and decodes alike (tests/unit/decoding/test_dbc_cache.py compares them on every
opendbc DBC). Only the daemon and the tools that decode frames import this module: it is
where cantools (and with it python-can) is imported.
"""

from __future__ import annotations

from cantools.database.can import Database, Message, Signal
from cantools.database.conversion import BaseConversion
from cantools.database.namedsignalvalue import NamedSignalValue

from agent.decoding.tables import DbcTables, MessageTable, SignalTable


def database_of(tables: DbcTables) -> Database:
    """The cantools database of `tables` (whatever cantools' constructors raise for tables no
    loader would make, say a damaged cache entry's)."""
    # As Database.add_dbc_string leaves it: strict=False (overlaps are our warnings), the
    # signals already in the order the loader sorted them into, the messages added as it adds
    # them (Database(messages) would build every message's codec a second time: +20 ms).
    database = Database(strict=False, sort_signals=None)
    database._add_messages([_message(table) for table in tables.messages])
    return database


def _message(table: MessageTable) -> Message:
    return Message(frame_id=table.frame_id, name=table.name, length=table.length,
                   signals=[_signal(signal) for signal in table.signals],
                   is_extended_frame=table.is_extended_frame, is_fd=table.is_fd,
                   unused_bit_pattern=table.unused_bit_pattern, strict=False, sort_signals=None)


def _signal(table: SignalTable) -> Signal:
    choices = None if table.choices is None else {
        value: NamedSignalValue(value, name) for value, name in table.choices.items()}
    return Signal(name=table.name, start=table.start, length=table.length,
                  byte_order=table.byte_order, is_signed=table.is_signed,
                  raw_initial=table.raw_initial, raw_invalid=table.raw_invalid,
                  conversion=BaseConversion.factory(scale=table.scale, offset=table.offset,
                                                    choices=choices, is_float=table.is_float),
                  minimum=table.minimum, maximum=table.maximum, unit=table.unit,
                  is_multiplexer=table.is_multiplexer,
                  multiplexer_ids=None if table.multiplexer_ids is None else
                  list(table.multiplexer_ids),
                  multiplexer_signal=table.multiplexer_signal)
