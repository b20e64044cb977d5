"""The daemon's glibc malloc settings (docs/performance.md, "The 30 MB above the floor").

Two settings keep the running agent's native heap near what it uses: two malloc arenas instead
of one per thread, and blocks of 128 KiB and more (a seal's numpy arrays) mmapped and given
back when freed, instead of kept resident by every arena that served a seal. The systemd unit
sets them as environment variables, which glibc reads as the process starts. `edge-agent run`
started any other way (a shell, a container, a demo) applies the same ones itself with
mallopt(3), for the allocations from then on. A variable set in the environment wins: it is
the operator's choice, and glibc has already applied it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Environment variable (as in the unit's Environment= lines) → (mallopt parameter, value).
MALLOC_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_ARENA_MAX": (M_ARENA_MAX, 2),
    # glibc's starting threshold; setting it turns off the raising of it to the largest
    # block freed, after which a seal's arrays came from the heap and stayed there.
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 128 * 1024),
}

Mallopt = Callable[[int, int], int]


def apply_malloc_settings(environ: Mapping[str, str] | None = None,
                          mallopt: Mallopt | None = None) -> dict[str, int]:
    """Apply every setting that `environ` (default: this process's) does not give; returns
    those applied. Nothing where the C library is not glibc."""
    environ = os.environ if environ is None else environ
    if mallopt is None:
        mallopt = _glibc_mallopt()
        if mallopt is None:
            return {}
    applied = {}
    for name, (parameter, value) in MALLOC_SETTINGS.items():
        if name in environ:
            continue
        if mallopt(parameter, value) == 1:  # mallopt returns 1 on success
            applied[name] = value
        else:
            log.warning("malloc: mallopt refused %s=%d", name, value)
    if applied:
        log.info("malloc: %s (set by the agent: the environment did not set them)",
                 ", ".join(f"{name}={value}" for name, value in applied.items()))
    return applied


def _glibc_mallopt() -> Mallopt | None:
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError):  # another C library or OS does not know the name
        version = None
    if not (version or "").startswith("glibc"):
        return None
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt
