"""The event-time gate: several sources, delivered in any interleaving, are sampled exactly as
one stream in time order would be; a silent source delays ticks by at most the lateness."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sampling.event_time import EventTimeGate, ReplayPacer
from agent.sources.health import SourceHealth

TICK_MS = 1000
WINDOW_MS = 60_000


@dataclass
class Frame:
    timestamp: float
    source: str


class TickClock:
    """A sampler with one 1 s period, as agent.sampling.sampler.Sampler moves: the first time starts
    it, a tick at exactly a frame's time is done before that frame is stored, a jump of more
    than two windows starts afresh."""

    def __init__(self) -> None:
        self.now_ms: int | None = None
        self.passed_ms = 0
        self.ticks: list[int] = []
        self._next = 0

    def advance(self, now: float) -> None:
        now_ms = int(now * 1000)
        if self.now_ms is not None and abs(now_ms - self.now_ms) > 2 * WINDOW_MS:
            self.now_ms = None  # the sampler's jump rule: restart at the new time
        if self.now_ms is None:
            self.now_ms = self.passed_ms = now_ms
            self._next = -(-now_ms // TICK_MS) * TICK_MS
        while self._next <= now_ms:
            self.ticks.append(self._next)
            self.passed_ms = self._next
            self._next += TICK_MS
        self.now_ms = max(self.now_ms, now_ms)

    @property
    def next_moment_ms(self) -> int:
        return self._next

    def quiet_span(self) -> tuple[int, int]:
        # As the sampler after a seal: no quiet span known until the next advance.
        return 0, 0


class RecordingStore:
    """Notes, for every frame stored, the last tick done before it."""

    def __init__(self, clock: TickClock) -> None:
        self.clock = clock
        self.stored: list[tuple[float, int | None]] = []

    def accept_all(self, frames, clock) -> None:
        for frame in frames:
            clock.advance(frame.timestamp)
            self.stored.append((frame.timestamp,
                                self.clock.ticks[-1] if self.clock.ticks else None))


def make_gate(names, lateness=1e9):
    clock = TickClock()
    stores = {name: RecordingStore(clock) for name in names}
    healths = {name: SourceHealth() for name in names}
    return EventTimeGate(clock, stores, healths, lateness, WINDOW_MS), clock, stores, healths


def last_tick_before(timestamp: float, first_ms: int) -> int | None:
    """The tick a frame must follow: the newest tick at or before it (ticks start at the
    first tick at or after the first frame)."""
    ms = int(timestamp * 1000)
    first_tick = -(-first_ms // TICK_MS) * TICK_MS
    if ms < first_tick:
        return None
    return ms // TICK_MS * TICK_MS


# A source: sorted timestamps in ms (gaps of up to 5 s: messages that go quiet), cut into
# batches; the deliveries of all sources interleaved in a random order.
source_streams = st.lists(
    st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=40),
    min_size=2, max_size=4)


@settings(max_examples=200, deadline=None)
@given(streams=source_streams, data=st.data())
def test_any_interleaving_of_sources_is_sampled_as_one_stream_in_time_order(streams, data):
    names = [f"can{i}" for i in range(len(streams))]
    batches = {}
    for name, gaps in zip(names, streams, strict=True):
        times, now = [], 1_000_000
        for gap in gaps:
            now += gap
            times.append(now / 1000)
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(times) - 1)), max_size=5)))
        bounds = [0, *cuts, len(times)]
        batches[name] = [[Frame(t, name) for t in times[a:b]]
                         for a, b in itertools.pairwise(bounds) if a < b]
    gate, clock, stores, healths = make_gate(names)
    pending = {name: list(chunks) for name, chunks in batches.items()}
    while any(pending.values()):
        name = data.draw(st.sampled_from([n for n in names if pending[n]]))
        gate.offer(name, pending[name].pop(0))
        if not pending[name]:
            gate.retire(name)
    gate.drain()

    first_ms = min(int(chunks[0][0].timestamp * 1000) for chunks in batches.values())
    for name in names:
        sent = [frame.timestamp for chunk in batches[name] for frame in chunk]
        stored = stores[name].stored
        assert [t for t, _ in stored] == sent  # every frame once, in its source's order
        for timestamp, tick in stored:
            assert tick == last_tick_before(timestamp, first_ms), (name, timestamp, tick)
        assert healths[name].late == 0
    assert clock.ticks == sorted(set(clock.ticks))


def test_one_source_never_waits():
    gate, clock, stores, _ = make_gate(["can0"])
    gate.offer("can0", [Frame(10.0, "can0"), Frame(10.5, "can0")])
    gate.offer("can0", [Frame(11.2, "can0"), Frame(12.7, "can0")])
    assert [t for t, _ in stores["can0"].stored] == [10.0, 10.5, 11.2, 12.7]
    assert clock.ticks == [10_000, 11_000, 12_000]


def test_a_silent_source_delays_ticks_by_at_most_the_lateness():
    gate, clock, stores, healths = make_gate(["can0", "can1"], lateness=2.0)
    gate.offer("can0", [Frame(10.0, "can0")])
    gate.offer("can1", [Frame(10.1, "can1")])
    assert clock.ticks == [10_000]
    gate.offer("can0", [Frame(11.5, "can0")])  # can1 says nothing more
    assert clock.ticks == [10_000] and stores["can0"].stored[-1] == (10.0, 10_000)
    gate.offer("can0", [Frame(13.0, "can0")])  # can1 is now 2.9 s behind: not waited for
    assert clock.ticks == [10_000, 11_000]  # released to 13.0 - 2 s; 11.5 s still waits
    assert [t for t, _ in stores["can0"].stored] == [10.0]
    gate.offer("can0", [Frame(14.2, "can0")])
    assert clock.ticks == [10_000, 11_000, 12_000]
    assert stores["can0"].stored[-1] == (11.5, 11_000)
    # can1 comes back with frames from before the ticks already done: late, still kept
    gate.offer("can1", [Frame(11.0, "can1"), Frame(12.5, "can1")])
    assert healths["can1"].late == 1  # 11.0 s, before the 12 s tick; 12.5 s is in time
    assert [t for t, _ in stores["can1"].stored] == [10.1, 11.0, 12.5]


def test_an_idle_source_lets_time_move_on():
    gate, clock, stores, _ = make_gate(["can0", "gps"])
    gate.offer("can0", [Frame(10.0, "can0")])
    gate.offer("gps", [Frame(10.2, "gps")])
    gate.offer("can0", [Frame(11.3, "can0"), Frame(12.4, "can0")])
    assert clock.ticks == [10_000]  # gps has not passed 11 s
    gate.idle("gps", 12.1)
    assert clock.ticks == [10_000, 11_000, 12_000]
    assert stores["can0"].stored == [(10.0, 10_000), (11.3, 11_000)]  # 12.4 s waits
    gate.drain()
    assert stores["can0"].stored[-1] == (12.4, 12_000)


def test_time_set_back_restarts_instead_of_counting_everything_late():
    gate, clock, stores, healths = make_gate(["can0"])
    gate.offer("can0", [Frame(1000.0, "can0"), Frame(1001.5, "can0")])
    gate.offer("can0", [Frame(500.0, "can0"), Frame(501.2, "can0")])
    assert clock.ticks[-1] == 501_000
    assert healths["can0"].late == 0
    assert [t for t, _ in stores["can0"].stored][-2:] == [500.0, 501.2]


def test_the_pacer_holds_back_the_replay_ahead_until_the_other_catches_up():
    pacer = ReplayPacer(lead=1.0)
    pacer.join("a")
    pacer.join("b")
    released = threading.Event()

    def ahead() -> None:
        pacer.pace("a", 105.0)
        released.set()

    runner = threading.Thread(target=ahead, daemon=True)
    runner.start()
    pacer.pace("b", 100.0)  # behind: never held
    assert not released.wait(0.2)  # 5 s ahead of b: held
    pacer.pace("b", 103.0)
    assert not released.wait(0.2)  # still 2 s ahead
    pacer.pace("b", 104.5)
    assert released.wait(10)
    runner.join(10)


def test_the_pacer_lets_go_when_the_other_replay_ends():
    pacer = ReplayPacer(lead=1.0)
    pacer.join("a")
    pacer.join("b")
    released = threading.Event()
    runner = threading.Thread(target=lambda: (pacer.pace("a", 50.0), released.set()),
                              daemon=True)
    runner.start()
    assert not released.wait(0.2)  # b has sent nothing yet: a waits for it
    pacer.leave("b")
    assert released.wait(10)


def test_after_a_config_switch_frames_older_than_the_resumed_time_still_flow(tmp_path):
    """The new pipeline resumes where the old one stopped; a replay that starts its log over
    delivers frames older than that. They are late (kept, counted) and time moves on with the
    newer ones: the gate must not wait for a moment the sampler has not computed yet."""
    import can

    from agent.config.schema import SamplingConfig, SignalRule
    from agent.decoding.dbc import load_dbc
    from agent.decoding.frames import FrameStore
    from agent.sampling.plan import build_plan
    from agent.sampling.ring import Ring
    from agent.sampling.sampler import Sampler
    from tests.helpers.dbc_fixtures import write_small_dbc

    dbc = load_dbc([write_small_dbc(tmp_path)])
    plan = build_plan(SamplingConfig(signals=(SignalRule("can0.Engine.Speed"),)),
                      {"can0": dbc.database})
    health = SourceHealth()
    store = FrameStore(dbc.database, plan.for_source("can0"), health)
    windows = []
    sampler = Sampler(plan, Ring(1000), {"can0": store}, 10_000,
                      lambda t0, t1: windows.append((t0, t1)))
    sampler.resume_after(105_300)
    gate = EventTimeGate(sampler, {"can0": store}, {"can0": health}, 2.0, 10_000)
    frame = lambda t: can.Message(arbitration_id=0x100, timestamp=t, is_extended_id=False,  # noqa: E731
                                  data=bytes(8))
    gate.offer("can0", [frame(100.0), frame(100.5)])
    gate.offer("can0", [frame(106.2), frame(111.4)])
    assert health.late == 2
    assert sampler.now_ms == 111_400 and windows == [(105_301, 110_000)]
