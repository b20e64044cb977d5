"""A serial sensor on a real pseudo-terminal, in its own process, driven line by line on stdin.

    python -m tests.helpers.sensor_emulator /tmp/x/ttyTPMS

creates a pty and a symlink to its device at the given path (as udev would for a USB
adapter), then obeys commands, answering `ok` on stdout after each one:

    send <hex>   write these bytes to the sensor line
    unplug       remove the symlink and close the pty (the device is gone)
    plug         a new pty (a new /dev/pts number) behind the same symlink

and unplugs and exits at the end of its input.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class PtySensor:
    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None
        self.slave: int | None = None

    def plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no CR/LF translation: bytes arrive as written
        temporary = self.link.with_name(self.link.name + ".new")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(os.ttyname(self.slave))
        temporary.replace(self.link)

    def unplug(self) -> None:
        self.link.unlink(missing_ok=True)
        for fd in (self.master, self.slave):
            if fd is not None:
                os.close(fd)
        self.master = self.slave = None

    def send(self, data: bytes) -> None:
        assert self.master is not None, "send while unplugged"
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]


class Emulator:
    """The emulator process, from the test's side: one method per command."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.sensor_emulator", str(link)], cwd=REPO,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()

    def _answer(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "ok", f"emulator said {line!r}"

    def command(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()
        self._answer()

    def send(self, data: bytes) -> None:
        self.command(f"send {data.hex()}")

    def unplug(self) -> None:
        self.command("unplug")

    def plug(self) -> None:
        self.command("plug")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()  # end of commands: the emulator unplugs and exits
        assert self.process.wait(timeout=10) == 0


def main() -> None:
    sensor = PtySensor(Path(sys.argv[1]))
    sensor.plug()
    print("ok", flush=True)
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "send":
            sensor.send(bytes.fromhex(argument))
        elif command == "unplug":
            sensor.unplug()
        elif command == "plug":
            sensor.plug()
        print("ok", flush=True)
    sensor.unplug()


if __name__ == "__main__":
    main()
