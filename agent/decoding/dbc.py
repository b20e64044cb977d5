"""Loading CAN databases: one cantools database per source, with a digest that names its content.

DBC files are read as `cantools --no-strict` reads them, because most production DBCs have a
signal that overlaps another somewhere, and cantools' strict mode refuses the whole file for
one of them. What strict mode would have refused is found here instead and reported: each
overlap (or signal reaching past its message) once, as a `LayoutWarning`. A source with
`strict = true` refuses such a database. ARXML, KCD and SYM files load through cantools' own
loaders, chosen by the file's suffix; any other suffix is read as a DBC.

A loaded database is its tables (agent/decoding/tables.py) first: checking and planning read
only those, and a DBC the cache holds loads without importing cantools. The cantools
`Database` that decodes frames is made when first asked for.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.decoding.cache import CachedWarning, DbcCache, cache_key
from agent.decoding.tables import DbcTables, tables_of
from agent.errors import DbcError

if TYPE_CHECKING:
    from cantools.database.can import Database, Message, Signal

    from agent.config.schema import SourceConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Format:
    name: str
    encoding: str  # cantools' default for the format (cantools.database.load_file)
    add: str  # the `Database` method that parses it (named: cantools is imported to parse)
    hint: str = ""


_DBC = _Format("DBC", "cp1252", "add_dbc_string", " (BO_ lines); is it a DBC file?")
FORMATS = {
    ".dbc": _DBC,
    ".arxml": _Format("ARXML", "utf-8-sig", "add_arxml_string"),
    ".kcd": _Format("KCD", "utf-8-sig", "add_kcd_string"),
    ".sym": _Format("SYM", "cp1252", "add_sym_string"),
}

# A strict refusal lists this many problems, then counts the rest.
_STRICT_SHOWN = 5
# The log at load lists this many warnings, then counts the rest: some production DBCs have
# thousands (GM's "Group" signals span their members) and would bury the journal at each
# start. `edge-agent config check` lists them all.
_LOGGED = 20


@dataclass(frozen=True)
class LayoutWarning:
    """What cantools' strict mode refuses in one message: two signals that can be present in
    the same frame and share bits, or one signal that reaches past the message's length."""

    path: Path
    message: str
    frame_id: int
    signals: tuple[str, ...]  # two that overlap, or the one that does not fit
    length: int  # the message's bytes

    def __str__(self) -> str:
        where = f"{self.path}: message {self.message} (0x{self.frame_id:X})"
        if len(self.signals) == 2:
            return f"{where}: signals {self.signals[0]} and {self.signals[1]} overlap"
        return f"{where}: signal {self.signals[0]} does not fit in its {self.length} bytes"


class ParsedDbc:
    """The content of one set of DBC files as this process loaded it: its tables and layout
    warnings, and its cantools database, made from the tables when first asked for (or kept
    from the parse, when cantools parsed it).

    Tables from a cache entry that someone damaged so that they still read as tables but
    cantools' constructors refuse them are parsed anew then: the database is the files', and
    so are the tables from that moment on."""

    def __init__(self, contents: Sequence[tuple[Path, bytes]], tables: DbcTables,
                 warnings: tuple[CachedWarning, ...], database: Database | None = None) -> None:
        # The files' bytes, until the database is made: the parse to fall back on.
        self._contents: Sequence[tuple[Path, bytes]] | None = \
            None if database is not None else contents
        self.tables = tables
        self.warnings = warnings
        self._database = database

    def database(self) -> Database:
        # One thread builds the pipeline; two racing here would only build twice.
        if self._database is None:
            from agent.decoding.database import database_of  # imports cantools

            try:
                self._database = database_of(self.tables)
            except Exception as exc:  # whatever cantools' constructors raise
                log.debug("DBC cache: its tables do not build (%s): parsing instead", exc)
                assert self._contents is not None
                self._database, _ = _parse(self._contents)
                self.tables = tables_of(self._database)
            self._contents = None
        return self._database


@dataclass(frozen=True)
class LoadedDbc:
    """The databases of one source merged into one, the SHA-256 over their bytes, and what
    cantools' strict mode would have refused in them. `tables` is what checking and planning
    read; `database` (cantools') decodes frames, made when first used."""

    digest: bytes
    paths: tuple[Path, ...]
    warnings: tuple[LayoutWarning, ...]
    parsed: ParsedDbc = field(compare=False, repr=False)

    @property
    def tables(self) -> DbcTables:
        return self.parsed.tables

    @property
    def database(self) -> Database:
        return self.parsed.database()


# Parsed databases by content digest and formats: buses that share a DBC (and a config reload
# that keeps it) share one cantools object instead of ~4 MB each. Nothing mutates a loaded
# database. Strictness is not part of the key: both parse alike, strict only refuses
# afterwards what the warnings list. Warnings are kept with the index of their file: files
# of the same content at other paths share the entry, and their warnings name their own paths.
_PARSED: dict[tuple[bytes, tuple[str, ...]], ParsedDbc] = {}
_PARSED_LIMIT = 8


def load_dbc(paths: Sequence[Path], *, strict: bool = False,
             cache: DbcCache | None = None) -> LoadedDbc:
    """Load and merge CAN databases; errors name the file and what cantools disliked.

    Overlapping signals are warnings (logged once per process, when the content is first
    loaded); with `strict` they are a DbcError that names the file, the message and the
    signals. With `cache`, DBC files parsed before (by any process) are read from it instead
    of parsed (agent/decoding/cache.py)."""
    contents = []
    sha = hashlib.sha256()
    for path in paths:
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise DbcError(f"{path}: cannot read DBC file ({exc.strerror})") from exc
        sha.update(hashlib.sha256(content).digest())
        contents.append((path, content))
    digest = sha.digest()
    formats = tuple(_format_of(path).name for path in paths)
    key = (digest, formats)
    parsed = _PARSED.get(key)
    if parsed is None:
        parsed = _load(contents, digest, formats, cache)
        _log(_warnings(parsed.warnings, paths))
        if len(_PARSED) >= _PARSED_LIMIT:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = parsed
    warnings = _warnings(parsed.warnings, paths)
    if strict and warnings:
        raise DbcError(_strict_refusal(warnings))
    return LoadedDbc(digest=digest, paths=tuple(paths), warnings=warnings, parsed=parsed)


def load_source_dbc(source: SourceConfig, cache: DbcCache | None = None) -> LoadedDbc:
    """`load_dbc` for a source of the config; errors also say where the config names the
    files (file and line of its `dbc` key)."""
    try:
        return load_dbc(source.dbc, strict=source.strict, cache=cache)
    except DbcError as exc:
        raise DbcError(f"{source.dbc_origin}: {exc}") from exc


def _format_of(path: Path) -> _Format:
    return FORMATS.get(path.suffix.lower(), _DBC)


def _load(contents: Sequence[tuple[Path, bytes]], digest: bytes, formats: tuple[str, ...],
          cache: DbcCache | None) -> ParsedDbc:
    """The tables from the disk cache when it has them (DBC files only), else parsed by
    cantools."""
    if cache is None or any(form != _DBC.name for form in formats):
        return _parsed(contents)
    key = cache_key(digest, formats)
    cached = cache.get(key, len(formats))
    if cached is not None:
        return ParsedDbc(contents, *cached)
    parsed = _parsed(contents)
    cache.put(key, parsed.tables, parsed.warnings)
    return parsed


def _parsed(contents: Sequence[tuple[Path, bytes]]) -> ParsedDbc:
    database, warnings = _parse(contents)
    return ParsedDbc(contents, tables_of(database), warnings, database)


def _parse(contents: Sequence[tuple[Path, bytes]]
           ) -> tuple[Database, tuple[CachedWarning, ...]]:
    from cantools.database.can import Database  # only a parse needs cantools

    database = Database(strict=False)
    warnings: list[CachedWarning] = []
    for index, (path, content) in enumerate(contents):
        form = _format_of(path)
        before = len(database.messages)
        try:
            # errors="replace" as cantools' own file loaders: a stray byte in a comment
            # must not refuse the file.
            getattr(database, form.add)(content.decode(form.encoding, errors="replace"))
        except Exception as exc:  # cantools raises many types for malformed files
            raise DbcError(f"{path}: cantools rejects this {form.name}: {exc}") from exc
        if len(database.messages) == before:
            raise DbcError(f"{path}: defines no CAN messages{form.hint}")
        warnings += [(index, message.name, message.frame_id, signals, message.length)
                     for message in database.messages[before:]
                     for signals in layout_problems(message)]
    return database, tuple(warnings)


def _warnings(cached: Sequence[CachedWarning], paths: Sequence[Path]
              ) -> tuple[LayoutWarning, ...]:
    return tuple(LayoutWarning(paths[index], message, frame_id, signals, length)
                 for index, message, frame_id, signals, length in cached)


def _log(warnings: Sequence[LayoutWarning]) -> None:
    for warning in warnings[:_LOGGED]:
        log.warning("%s", warning)
    if len(warnings) > _LOGGED:
        log.warning("... and %d more such warnings in %s (edge-agent config check lists "
                    "them all)", len(warnings) - _LOGGED,
                    ", ".join(sorted({str(w.path) for w in warnings[_LOGGED:]})))


def _strict_refusal(warnings: Sequence[LayoutWarning]) -> str:
    shown = "; ".join(str(w) for w in warnings[:_STRICT_SHOWN])
    more = len(warnings) - _STRICT_SHOWN
    return (f"strict = true refuses {shown}" + (f"; and {more} more" if more > 0 else "")
            + ". Fix the DBC, or drop strict to load it with these as warnings")


def layout_problems(message: Message) -> list[tuple[str, ...]]:
    """The problems cantools' strict mode refuses `message` for, each once, in signal order:
    pairs of signals that share bits and can be in the same frame, and single signals that
    reach past the message's length.

    Multiplexed signals on different pages (different values of a multiplexer they both
    depend on) never share a frame, so they may use the same bits; a signal that does not
    depend on a multiplexer is in every frame."""
    signals = list(message.signals)
    bits = [_bits(signal) for signal in signals]
    pages = [_pages(message, signal) for signal in signals]
    outside = ~((1 << (8 * message.length)) - 1)
    problems: list[tuple[str, ...]] = [(signal.name,) for signal, mask
                                       in zip(signals, bits, strict=True) if mask & outside]
    for a, b in itertools.combinations(range(len(signals)), 2):
        if bits[a] & bits[b] and _together(pages[a], pages[b]):
            problems.append((signals[a].name, signals[b].name))
    return problems


def _bits(signal: Signal) -> int:
    """The payload bits `signal` uses, as a mask of (byte * 8 + bit within the byte)."""
    if signal.byte_order == "little_endian":
        return ((1 << signal.length) - 1) << signal.start
    # Motorola: `start` is the MSB in DBC's sawtooth numbering; the signal runs from there
    # towards the next byte's low bits, i.e. through consecutive positions counted MSB first.
    first = 8 * (signal.start // 8) + 7 - signal.start % 8
    mask = 0
    for position in range(first, first + signal.length):
        mask |= 1 << (8 * (position // 8) + 7 - position % 8)
    return mask


def _pages(message: Message, signal: Signal) -> dict[str, frozenset[int]]:
    """The multiplexer values `signal` is present under, by multiplexer, up its chain of
    multiplexers (extended multiplexing nests them)."""
    pages: dict[str, frozenset[int]] = {}
    while signal.multiplexer_signal and signal.multiplexer_ids \
            and signal.multiplexer_signal not in pages:
        pages[signal.multiplexer_signal] = frozenset(signal.multiplexer_ids)
        signal = message.get_signal_by_name(signal.multiplexer_signal)
    return pages


def _together(a: dict[str, frozenset[int]], b: dict[str, frozenset[int]]) -> bool:
    """Whether signals present under pages `a` and `b` can be in the same frame."""
    return all(a[mux] & b[mux] for mux in a.keys() & b.keys())


def combined_digest(digests: Sequence[bytes]) -> bytes:
    """One digest for every DBC the agent runs with, in source order."""
    sha = hashlib.sha256()
    for digest in digests:
        sha.update(digest)
    return sha.digest()
