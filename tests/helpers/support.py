"""Helpers for tests that need real system tools."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import TypeVar

import pytest
from devkit.broker import find_mosquitto

T = TypeVar("T")


def _missing(what: str, how: str) -> None:
    message = f"{what} is not installed ({how})"
    if os.environ.get("AGENT_REQUIRE_SYSTEM") == "1":
        pytest.fail(f"{message}; AGENT_REQUIRE_SYSTEM=1 forbids skipping")
    pytest.skip(message)


def require_tool(name: str) -> str:
    """The tool's path; skip the test without it, or fail under AGENT_REQUIRE_SYSTEM=1."""
    found = shutil.which(name) or (name if os.access(name, os.X_OK) else None)
    if found is None:
        _missing(name, "see .ci/run for the Debian packages")
    return found


def require_mosquitto() -> str:
    found = find_mosquitto()
    if found is None:
        _missing("mosquitto", "apt-get install mosquitto")
    return found


def wait_until(condition: Callable[[], T], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll `condition` until it gives a true value or `timeout` seconds pass; return what it
    gave last (so a test can wait for a value and use it)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := condition():
            return result
        time.sleep(interval)
    return condition()
