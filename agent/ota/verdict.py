"""Is a freshly applied config working? Two snapshots of the counters, one verdict.

A config that validates can still fail on the vehicle: a CAN channel that does not exist, a
DBC that does not match the bus, a broker that is not there. After an apply the agent takes a
snapshot, waits the grace period, takes another and asks `problems`. Judged, deliberately
narrowly so that a quiet bus (ignition off) is not a failure:
- a source that got no frame while failing to open its bus again and again;
- frames of planned messages that arrived while no signal was sampled (a DBC that does not
  match the bus); planned messages that do not come at all (sent only while charging, say)
  are not a failure;
- when the update changed [uplink]: a connection that never came up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceCounters:
    frames: int
    reconnects: int
    planned_frames: int  # frames of messages the plan samples (decoded, or failing to)


@dataclass(frozen=True)
class HealthSnapshot:
    sources: Mapping[str, SourceCounters]
    samples: int
    uplink_connected: bool
    uplink_connects: int


def problems(before: HealthSnapshot, after: HealthSnapshot, *,
             uplink_changed: bool) -> list[str]:
    found = []
    planned = 0
    for name, now in after.sources.items():
        then = before.sources.get(name, SourceCounters(0, 0, 0))
        frames, reconnects = now.frames - then.frames, now.reconnects - then.reconnects
        planned += now.planned_frames - then.planned_frames
        if frames <= 0 and reconnects > 0:
            found.append(f"source {name} got no frame and failed to open its bus "
                         f"{reconnects} times")
    if planned > 0 and after.samples <= before.samples:
        found.append(f"{planned} frames of planned messages arrived but no signal was "
                     "sampled (does the DBC match the bus?)")
    if uplink_changed and not after.uplink_connected and after.uplink_connects == 0:
        found.append("the changed uplink never connected to its broker")
    return found
