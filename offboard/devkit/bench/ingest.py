"""Figure 1: CPU per frame through the real ingest path, queued, against a naive python-can
consumer. Every frame is queued before timing, which flatters: the headline is the paced
figure (paced.py), with this one beside it.

Four buses at full 500 kbit/s load: frames of the bundled drive (encoded from
dbc/vehicle.dbc), retimed to 4,100 frames/s per bus, each bus a different stretch of the drive.

- CPU: every frame is queued on a python-can virtual bus first, then process CPU time is
  measured while four threads drain the buses. The agent's threads are its own source loops
  (`CanBusSource.receive` with the agent's filters and frame handler: lock, sampler, FrameStore,
  ring) inside a real `Agent`; sealing a window is figure 3 and does not fall in the stretch.
  The baseline's threads receive every frame the same way, call `db.decode_message()` on it
  and append every decoded value to a per-signal list.
- Drops: one paced run at the real rate, each bus a bounded queue (QUEUE_FRAMES, like a socket
  buffer); a frame that finds its queue full is dropped and counted.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import can
import cantools

from devkit.bench.common import (
    VEHICLE_DBC,
    Figure,
    agent_config_text,
    cpu_seconds,
    drive_frames,
    median,
)

if TYPE_CHECKING:
    from agent.runtime.daemon import Agent

BUSES = 4
FRAMES_PER_SECOND = 4_100
QUEUE_FRAMES = 1_024  # ~250 ms of a full bus: what a socket buffer holds, give or take
START = 1_780_000_020.0  # 20 s into a minute: no window closes in a measured stretch


def run(quick: bool) -> Figure:
    seconds = 2.0 if quick else 10.0
    repeats = 2 if quick else 5
    per_bus = int(seconds * FRAMES_PER_SECOND)
    frames = _bus_frames(per_bus)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as scratch:
        agent_runs, baseline_runs = [], []
        for _ in range(repeats):
            agent_runs.append(_agent_cpu(Path(scratch), frames))
            baseline_runs.append(_baseline_cpu(frames))
        dropped, offered = _paced_drops(Path(scratch), frames, seconds)
    total = BUSES * per_bus
    agent_us = median(agent_runs) / total * 1e6
    baseline_us = median(baseline_runs) / total * 1e6
    ratio = baseline_us / agent_us
    return Figure(
        key="ingest_cpu_per_frame",
        title="Ingest CPU per frame, queued (4 buses at 4,100 frames/s)",
        unit="µs/frame", value=round(agent_us, 3), baseline=round(baseline_us, 3),
        baseline_name="python-can recv + db.decode_message() + store every value",
        ratio=round(ratio, 2), target="≥ 5x less CPU than the baseline, 0 frames dropped",
        met=ratio >= 5 and dropped == 0, runs=repeats,
        details={"frames_per_run": total, "dropped": dropped, "offered_paced": offered,
                 "paced_seconds": seconds,
                 "cpu_share_of_one_core_at_full_load": round(
                     agent_us * BUSES * FRAMES_PER_SECOND / 1e6, 3)})


def _bus_frames(per_bus: int) -> list[list[can.Message]]:
    """`per_bus` frames for each bus, retimed to the full-load rate."""
    source = list(drive_frames(per_bus * BUSES))
    buses = []
    for bus in range(BUSES):
        stretch = source[bus * per_bus:(bus + 1) * per_bus]
        for number, frame in enumerate(stretch):
            frame.timestamp = START + number / FRAMES_PER_SECOND
            frame.channel = None
        buses.append(stretch)
    return buses


def _make_agent(scratch: Path, channels: list[str], **config: object):  # noqa: ANN202
    from agent.config.schema import parse_config
    from agent.runtime.daemon import build_agent
    from agent.wire.keys import generate_key_pair

    key = scratch / "vehicle.key"
    if not key.exists():
        generate_key_pair(key)
    state = Path(tempfile.mkdtemp(dir=scratch))
    text = agent_config_text(sources=[(f"can{n}", c) for n, c in enumerate(channels)],
                             key=key, state=state, **config)  # type: ignore[arg-type]
    return build_agent(parse_config(text, scratch / "agent.toml"))


def _agent_cpu(scratch: Path, frames: list[list[can.Message]]) -> float:
    channels = [f"bench-ingest-{time.monotonic_ns()}-{n}" for n in range(BUSES)]
    agent = _make_agent(scratch, channels)
    try:
        buses = []
        for source, stretch in zip(agent.sources, frames, strict=True):
            bus = source.open_bus()
            for frame in stretch:
                bus.queue.put_nowait(frame)
            source.end_of_data = lambda: True  # type: ignore[method-assign]
            buses.append(bus)
        spent = _cpu_of(_receivers(agent, buses, threading.Event()))
        taken = sum(source.health.frames for source in agent.sources)
        if taken != sum(map(len, frames)):
            raise RuntimeError(f"the agent took {taken} of {sum(map(len, frames))} frames")
        for bus in buses:
            bus.shutdown()
        return spent
    finally:
        agent.parts.spool.close()


def _receivers(agent: Agent, buses: list[can.BusABC],
               stop: threading.Event) -> list[threading.Thread]:
    """A thread per source running the agent's own receive loop on its bus, as the daemon does."""
    return [threading.Thread(target=source.receive, args=(
        bus, agent.frame_handler(source, f"source {source.name}"),
        lambda now: None, stop)) for source, bus in zip(agent.sources, buses, strict=True)]


def _cpu_of(threads: list[threading.Thread]) -> float:
    """Process CPU seconds from starting `threads` until all of them have ended."""
    before = cpu_seconds()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return cpu_seconds() - before


def _baseline_cpu(frames: list[list[can.Message]]) -> float:
    db = cantools.database.load_file(str(VEHICLE_DBC))
    buses = []
    for number, stretch in enumerate(frames):
        bus = can.Bus(interface="virtual", channel=f"bench-base-{time.monotonic_ns()}-{number}")
        for frame in stretch:
            bus.queue.put_nowait(frame)
        buses.append(bus)
    stores: list[dict[str, list[tuple[float, object]]]] = [defaultdict(list) for _ in buses]

    def consume(bus: can.BusABC, store: dict[str, list[tuple[float, object]]]) -> None:
        recv, decode = bus.recv, db.decode_message
        while (frame := recv(0.25)) is not None:
            timestamp = frame.timestamp
            for name, value in decode(frame.arbitration_id, frame.data).items():
                store[name].append((timestamp, value))

    threads = [threading.Thread(target=consume, args=pair) for pair in zip(buses, stores,
                                                                            strict=True)]
    spent = _cpu_of(threads)
    for bus in buses:
        bus.shutdown()
    return spent


def _paced_drops(scratch: Path, frames: list[list[can.Message]], seconds: float) -> tuple[int, int]:
    """Offer every bus's frames at the real rate; count those that find the queue full."""
    channels = [f"bench-paced-{time.monotonic_ns()}-{n}" for n in range(BUSES)]
    agent = _make_agent(scratch, channels)
    try:
        buses = []
        for source in agent.sources:
            bus = source.open_bus(rx_queue_size=QUEUE_FRAMES)
            buses.append(bus)
        stop = threading.Event()
        threads = _receivers(agent, buses, stop)
        for thread in threads:
            thread.start()
        dropped = offered = 0
        started = time.monotonic()
        position = 0
        total = len(frames[0])
        while position < total:
            due = min(total, int((time.monotonic() - started) * FRAMES_PER_SECOND) + 1)
            for bus, stretch in zip(buses, frames, strict=True):
                for frame in stretch[position:due]:
                    offered += 1
                    try:
                        bus.queue.put_nowait(frame)
                    except queue.Full:
                        dropped += 1
            position = due
            time.sleep(0.002)
        deadline = time.monotonic() + 30
        while (sum(s.health.frames for s in agent.sources) < offered - dropped
               and time.monotonic() < deadline):
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join()
        for bus in buses:
            bus.shutdown()
        return dropped, offered
    finally:
        agent.parts.spool.close()
