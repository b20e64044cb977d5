"""Health counters: what each part of the data path has seen, sent in every batch.

At consent `off` a batch carries only the counters of the agent's own faults (OFF_COUNTERS):
how much traffic there was (frames, samples, batches published) changes every window the car
is driven, so a series of them would say when it is driven, which `off` withholds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

# Faults of the agent itself, which do not grow with use: a source's code failing (not a
# device going away, which follows the ignition), batches lost or refused, a spool moved
# aside. Keys as the daemon flattens them (`<source>.failures`).
OFF_COUNTERS = frozenset({"ring.lost", "spool.evicted", "spool.not_kept", "spool.moved_aside",
                          "spool.unreadable", "uplink.refused", "uplink.dropped"})


def counters_at_off(counters: Mapping[str, int]) -> dict[str, int]:
    """The counters a batch may carry at consent `off`."""
    return {key: value for key, value in counters.items()
            if key in OFF_COUNTERS or key.endswith(".failures")}


@dataclass
class SourceHealth:
    """Counters of one source; only its own thread writes them.

    `overflow` counts frames the kernel dropped before the agent read them (a SocketCAN
    socket's receive queue was full). `late` counts frames that arrived after event time had
    passed them (the source lagged the others by more than `[sampling] max_lateness`): kept
    for later ticks, missing from the ticks already done. `rejected` counts input that a
    non-CAN source dropped, by reason (bad checksum, out of range, ...); `state` holds the
    gauges a source reports about itself (gpsd `fix_mode`, `connected`, `stale`). Both are
    flattened into the counters as `rejected.<reason>` and `<gauge>`. `failures` counts the
    times the source's own code raised an unexpected error and was restarted (a bug, never a
    device going away: that is `reconnects`); `last_failure` says what the latest one was
    (shown by diagnostics, not a counter).
    """

    frames: int = 0
    ignored: int = 0
    error_frames: int = 0
    short_frames: int = 0
    decode_errors: int = 0
    reconnects: int = 0
    failures: int = 0
    overflow: int = 0
    late: int = 0
    last_frame_time: float = 0.0  # the newest frame's own timestamp (event time)
    # time.monotonic() when it arrived, for ages (an instant of this run: not compared)
    last_received: float = field(default=0.0, compare=False)
    last_failure: str = ""
    rejected: dict[str, int] = field(default_factory=dict)
    state: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def counters(self) -> dict[str, int]:
        counters = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.type == "int"}
        # dict() copies in one step under the GIL while the source thread may add keys.
        counters.update({f"rejected.{reason}": count
                         for reason, count in dict(self.rejected).items()})
        counters.update(dict(self.state))
        return counters


@dataclass(frozen=True)
class SourceStats:
    """One source as diagnostics see it: a snapshot, taken without stopping the source.

    `where` is what it reads, as its type words it (a CAN channel, a log, gpsd's host:port, a
    serial device); `counters` are `SourceHealth.counters()` at the time of the snapshot."""

    name: str
    type: str
    where: str
    value_source: bool
    counters: Mapping[str, int]
    last_failure: str
    last_frame_time: float
    last_received: float
    stale_after: float
    finished: bool


def rejected(source: Mapping[str, Any]) -> dict[str, int]:
    """Rejected input by reason, from a source document's `rejected.<reason>` counters."""
    return {key.split(".", 1)[1]: count for key, count in source.items()
            if key.startswith("rejected.")}


# A bus's counters of frames it could not use (each is also warned of by the CAN source);
# `diag status` sums them and `diag buses` exits with EXIT_PROBLEM when any is non-zero. Here,
# not in the CAN source, so that diagnostics read them without importing python-can.
FRAME_PROBLEMS = ("error_frames", "short_frames", "decode_errors", "overflow")


def frame_problems(source: Mapping[str, Any]) -> int:
    return sum(source[key] for key in FRAME_PROBLEMS)
