"""The frames of a CAN log file, or of candump text on stdin, one by one.

python-can reads every format; for candump's (`candump -L`, a `.log` or `.log.gz`, or `-` for
stdin) the lines are counted, so that a line that is not candump format is reported with the
file's name and the line's number instead of python-can's `too many values to unpack`.
"""

from __future__ import annotations

import gzip
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import can

from agent.errors import AgentError

STDIN = Path("-")


class LogFormatError(AgentError, ValueError):
    """A line of a candump log is not candump format (a ValueError, as python-can's are)."""


class _CountedLines:
    """A text stream for python-can's candump reader that remembers the line it is at."""

    def __init__(self, stream: TextIO, *, owned: bool) -> None:
        self._stream = stream
        self._owned = owned
        self.number = 0
        self.text = ""

    def __iter__(self) -> Iterator[str]:
        for line in self._stream:
            self.number += 1
            self.text = line
            yield line

    def close(self) -> None:
        if self._owned:
            self._stream.close()


def is_candump(path: Path) -> bool:
    """Whether `path` names candump text (`-` is stdin, read as candump)."""
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes[-1:] == [".gz"]:
        suffixes = suffixes[:-1]
    return path == STDIN or suffixes[-1:] == [".log"]


def read_frames(path: Path) -> Iterator[can.Message]:
    """The frames of the log at `path` (`-`: candump text from stdin) in file order. A format
    python-can cannot read raises ValueError here, a bad candump line while iterating."""
    if not is_candump(path):
        return iter(can.LogReader(str(path)))
    return _candump_frames(path)


def _candump_frames(path: Path) -> Iterator[can.Message]:
    name = "stdin" if path == STDIN else str(path)
    if path == STDIN:
        lines = _CountedLines(sys.stdin, owned=False)
    else:
        opener = gzip.open if path.suffix.lower() == ".gz" else open
        lines = _CountedLines(opener(path, "rt", encoding="utf-8", errors="replace"),
                              owned=True)
    frames = iter(can.io.CanutilsLogReader(lines))
    try:
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except (ValueError, IndexError) as exc:
                raise LogFormatError(
                    f"{name}, line {lines.number}: not a candump -L line: "
                    f"{lines.text.strip()[:80]!r} (expected '(TIME) CHANNEL ID#DATA', as "
                    f"`candump -L` writes; {exc})") from exc
            yield frame
    finally:
        lines.close()
