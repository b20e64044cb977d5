"""`edge-agent diag live [GLOB]`: a full-screen monitor of the signals, like `cantools monitor`.

On a terminal: a header with the agent's counters (frames received, ignored, errors, kernel
overflow, frame rate), the signals with full names, value, unit and age, and keys (q quit,
f filter, p pause, arrows and PgUp/PgDn scroll, s sort by name/age/value). Elsewhere (a pipe,
--json, --once): the table, or one JSON line per refresh, printed --count times.

The screen's state and what each key does are pure (`View`); only `_monitor` touches the
terminal and the socket.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import select
import sys
import termios
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.layout import Layout
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agent.cli.diag.common import (
    EXIT_OK,
    ask,
    common_options,
    console,
    not_reachable,
)
from agent.cli.diag.signals import table
from agent.runtime.control import ControlUnavailable
from agent.sources.health import FRAME_PROBLEMS

SORTS = ("name", "age", "value")
KEYS_HELP = ("q quit  f filter  p pause  ↑/↓ PgUp/PgDn scroll  s sort (name/age/value)")
# What a terminal sends for the keys that are not one character.
ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[5~": "pgup", "\x1b[6~": "pgdn",
           "\x1bOA": "up", "\x1bOB": "down"}
HEADER_LINES = 3
FOOTER_LINES = 1
TABLE_HEAD_LINES = 2  # the column titles and the rule under them


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "live", parents=[common_options()], help="full-screen monitor of the signal values",
        description="A full-screen monitor of the signals matching GLOB, refreshed every "
                    "--interval s: the agent's counters in a header, full signal names, value "
                    "and unit, age. Keys: q quit, f filter (type a glob, Enter; Esc cancels), "
                    "p pause, up/down and PgUp/PgDn scroll, s sort by name, age or value. "
                    "Not on a terminal, or with --json or --once: the table (or a JSON line) "
                    "per refresh.")
    parser.add_argument("glob", nargs="?", default="*",
                        help="signals to show, as for diag signals (default: all)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    parser.add_argument("--count", type=int, help="stop after this many refreshes")
    parser.add_argument("--once", action="store_true",
                        help="print the table (or JSON) once and exit, even on a terminal")
    parser.set_defaults(func=_do_live)


def _do_live(args: argparse.Namespace) -> int:
    if args.once:
        args.count = 1
    try:
        if args.json or args.count is not None or not _interactive():
            return _print_refreshes(args)
        return _monitor(args)
    except ControlUnavailable as exc:
        return not_reachable(args, exc)
    except KeyboardInterrupt:
        return EXIT_OK


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _print_refreshes(args: argparse.Namespace) -> int:
    refreshes = 0
    out = console()
    while args.count is None or refreshes < args.count:
        rows = ask(args, "signals", glob=args.glob)
        if args.json:
            print(json.dumps({"time": time.time(), "signals": rows}), flush=True)
        else:
            out.print(table(rows))
        refreshes += 1
        if args.count is None or refreshes < args.count:
            time.sleep(args.interval)
    return EXIT_OK


# The screen, as pure state.

@dataclass
class View:
    glob: str = "*"
    sort: str = "name"
    paused: bool = False
    offset: int = 0
    typing: str | None = None  # the filter being typed after `f`, until Enter or Esc
    rows: list[dict[str, Any]] = field(default_factory=list)
    counters: dict[str, float] = field(default_factory=dict)
    vehicle: str = ""
    error: str = ""
    stale: bool = False  # the filter changed: fetch now, paused or not
    # What the last screen drawn could hold once long names fold onto several lines: the
    # rows shown from `offset`, the rows that fit on the page before it and on the last
    # page. Paging moves by these, so no row is skipped or out of reach.
    shown: int = 0
    previous_page: int = 0
    last_page: int = 0

    def press(self, key: str, page: int) -> bool:
        """Apply one key (a character, or a name from ESCAPES); False means quit.
        `page` is how many rows the screen shows."""
        if self.typing is not None:
            if key in ("\r", "\n"):
                self.glob, self.typing, self.offset = self.typing or "*", None, 0
                self.stale = True
            elif key == "\x1b":
                self.typing = None
            elif key in ("\x7f", "\b"):
                self.typing = self.typing[:-1]
            elif len(key) == 1 and key.isprintable():
                self.typing += key
            return True
        if key in ("q", "Q", "\x03"):
            return False
        if key == "f":
            self.typing = ""
        elif key == "p":
            self.paused = not self.paused
        elif key == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif key in ("up", "k"):
            self.scroll(-1, page)
        elif key in ("down", "j"):
            self.scroll(1, page)
        elif key == "pgup":
            self.scroll(-(self.previous_page or page), page)
        elif key == "pgdn":
            self.scroll(self.shown or page, page)
        return True

    def scroll(self, by: int, page: int) -> None:
        self.offset = max(0, min(self.offset + by, len(self.rows) - (self.last_page or page)))

    def sorted_rows(self) -> list[dict[str, Any]]:
        if self.sort == "age":
            return sorted(self.rows, key=lambda row: (row["age_s"], row["signal"]))
        if self.sort == "value":
            return sorted(self.rows, key=lambda row: (row["label"] is not None,
                                                      row["label"] or "", row["value"],
                                                      row["signal"]))
        return sorted(self.rows, key=lambda row: row["signal"])


def counters(status: dict[str, Any]) -> dict[str, float]:
    """The header's counters, summed over the sources of a `status` document."""
    sources = status["sources"]
    return {
        "received": sum(source.get("frames", 0) for source in sources),
        "ignored": sum(source.get("ignored", 0) for source in sources),
        "errors": sum(source.get(key, 0) for source in sources for key in FRAME_PROBLEMS
                      if key != "overflow")
        + sum(count for source in sources for key, count in source.items()
              if key.startswith("rejected.")),
        "overflow": sum(source.get("overflow", 0) for source in sources),
        "rate": sum(source.get("frames_per_s", 0.0) for source in sources),
    }


def screen(view: View, height: int, width: int) -> Layout:
    """The whole screen for a terminal `height` lines high and `width` columns wide."""
    # On a narrow terminal the header's lines wrap: measure it (with the widest row range it
    # can show) and give the table what is left.
    header_lines = _height(_header(view, len(view.rows)), width)
    lines = rows_per_page(height, header_lines)
    ordered = view.sorted_rows()
    view.shown = _rows_that_fit(ordered[view.offset:view.offset + lines], lines, width)
    view.previous_page = _rows_that_fit(ordered[:view.offset][::-1][:lines], lines, width)
    view.last_page = _rows_that_fit(ordered[::-1][:lines], lines, width)
    layout = Layout()
    layout.split_column(Layout(_header(view, view.shown), name="header", size=header_lines),
                        Layout(_body(ordered[view.offset:view.offset + view.shown]),
                               name="body"),
                        Layout(_footer(view), name="footer", size=FOOTER_LINES))
    return layout


def rows_per_page(height: int, header_lines: int = HEADER_LINES) -> int:
    return max(1, height - header_lines - FOOTER_LINES - TABLE_HEAD_LINES)


def _height(renderable: Group | Table, width: int) -> int:
    """How many lines `renderable` takes at `width` columns."""
    measure = Console(width=width, file=io.StringIO(), color_system=None)
    return len(measure.render_lines(renderable, pad=False))


def _header(view: View, page: int) -> Group:
    c = view.counters
    first = f"[bold]edge-agent diag live[/]  vehicle {escape(view.vehicle)}"
    if view.paused:
        first += "  [reverse bold] PAUSED [/]"
    second = (f"received {c.get('received', 0):.0f}  ignored {c.get('ignored', 0):.0f}  "
              f"errors {c.get('errors', 0):.0f}  overflow {c.get('overflow', 0):.0f}  "
              f"rate {c.get('rate', 0.0):.0f} frames/s")
    total = len(view.rows)
    shown = (f"signals {min(view.offset + 1, total)}-{min(view.offset + page, total)} of "
             f"{total}" if total else "no signal matches")
    third = f"{shown}  filter {escape(view.glob)}  sort {view.sort}"
    if view.error:
        third += f"  [red]{escape(view.error)}[/]"
    # One line each, cut on a narrow terminal: a wrapped counter line would push the third
    # line out of the header's three.
    return Group(*(Text.from_markup(line, overflow="fold") for line in (first, second, third)))


def _rows_that_fit(rows: list[dict[str, Any]], lines: int, width: int) -> int:
    """How many of `rows`, from the first, fit in `lines` lines at `width` columns once their
    names fold (at least one). The table only grows as rows are added, so a bisection finds it."""
    fits, too_many = 1, len(rows) + 1
    while too_many - fits > 1:
        middle = (fits + too_many) // 2
        if _height(_body(rows[:middle]), width) <= lines + TABLE_HEAD_LINES:
            fits = middle
        else:
            too_many = middle
    return min(fits, len(rows)) if rows else 0


def _body(rows: list[dict[str, Any]]) -> Table:
    result = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, expand=True)
    result.add_column("signal", overflow="fold", ratio=3)  # full names: folded, never cut
    result.add_column("value", justify="right", overflow="fold", ratio=1)
    result.add_column("unit", overflow="fold")
    result.add_column("age", justify="right", no_wrap=True)
    for row in rows:
        value = row["label"] or _number(row["value"])
        result.add_row(escape(row["signal"]), escape(str(value)), escape(row["unit"] or ""),
                       f"{row['age_s']:.1f} s")
    return result


def _footer(view: View) -> Text:
    if view.typing is not None:
        return Text.from_markup(f"[reverse]filter (glob, Enter to apply, Esc to cancel):[/] "
                                f"{escape(view.typing)}_")
    return Text(KEYS_HELP, style="dim")


def _number(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


# The terminal and the socket.

def _monitor(args: argparse.Namespace) -> int:
    view = View(glob=args.glob)
    out = Console(highlight=False)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    _refresh(args, view)
    try:
        tty.setcbreak(fd)
        with Live(screen(view, out.size.height, out.size.width), console=out, screen=True,
                  auto_refresh=False) as live:
            next_refresh = time.monotonic() + args.interval
            while True:
                live.update(screen(view, out.size.height, out.size.width), refresh=True)
                ready, _, _ = select.select([fd], [], [],
                                            max(0.0, next_refresh - time.monotonic()))
                if ready:
                    for key in _keys(os.read(fd, 64).decode(errors="replace")):
                        if not view.press(key, rows_per_page(out.size.height)):
                            return EXIT_OK
                if view.stale or time.monotonic() >= next_refresh:
                    if view.stale or not view.paused:
                        _refresh(args, view)
                    next_refresh = time.monotonic() + args.interval
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _refresh(args: argparse.Namespace, view: View) -> None:
    """New values and counters; a daemon gone mid-way is said in the header, not a crash."""
    view.stale = False
    try:
        status = ask(args, "status")
        view.rows = ask(args, "signals", glob=view.glob)
    except ControlUnavailable as exc:
        if not view.rows and not view.vehicle:
            raise
        view.error = str(exc)
        return
    view.vehicle, view.counters, view.error = status["vehicle"], counters(status), ""
    view.offset = max(0, min(view.offset, len(view.rows) - 1))


def _keys(data: str) -> list[str]:
    """The keys in what one read from the terminal gave: escape sequences as names."""
    keys = []
    while data:
        for sequence, name in ESCAPES.items():
            if data.startswith(sequence):
                keys.append(name)
                data = data[len(sequence):]
                break
        else:
            keys.append(data[0])
            data = data[1:]
    return keys
