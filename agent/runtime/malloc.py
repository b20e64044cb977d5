"""The daemon's glibc malloc settings (docs/performance.md, "The 30 MB above the floor").

Three settings keep the running agent's native heap steady: two malloc arenas instead of one
per thread; a fixed mmap threshold of 1 MiB, so that glibc no longer raises it to the largest
block freed (after which the heap grew in steps over the first hours); and a trim threshold of
8 MiB, so that the ~5 MB of numpy arrays a seal uses stay in the arena for the next seal
instead of being given back and faulted in again (~1,150 page faults, ~2 ms, a seal). The
systemd unit sets them as environment variables, which glibc reads as the process starts.
`edge-agent run` started any other way (a shell, a container, a demo) applies the same ones
itself with mallopt(3), for the allocations from then on. A variable set in the environment
wins: it is the operator's choice, and glibc has already applied it.
"""

from __future__ import annotations

import ctypes
import logging
import os
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# Environment variable (as in the unit's Environment= lines) → (mallopt parameter, value).
MALLOC_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_ARENA_MAX": (M_ARENA_MAX, 2),
    # Setting it turns off glibc's raising of it to the largest block freed. Above a seal's
    # arrays (384 KB for a 48,000-sample minute): they come from the arena and are reused.
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 1024 * 1024),
    # Free memory at the top of a heap kept up to this much: a seal's arrays, for the next.
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 8 * 1024 * 1024),
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
