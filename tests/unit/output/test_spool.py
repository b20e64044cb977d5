import contextlib
import os
import sqlite3
import stat
import subprocess
import uuid

import pytest

from agent.output.spool import PRIORITY_EVENT, Spool
from agent.output.spool_file import read_spool_file
from agent.privacy.at_rest import SEAL_OVERHEAD, AtRest
from tests.helpers.support import require_tool


def put(spool, seq, size=100, priority=1):
    return spool.put("events" if priority == 0 else "telemetry", b"b" * 16, seq,
                     bytes([seq % 256]) * size, priority)


def test_batches_come_out_by_priority_then_arrival_and_survive_reopening(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 10_000)
    for seq in range(3):
        put(spool, seq)
    put(spool, 99, priority=PRIORITY_EVENT)
    spool.close()
    spool = Spool(path, 10_000)
    assert [b.seq for b in spool.next_batches(10)] == [99, 0, 1, 2]
    assert spool.next_batches(10)[0].topic == "events"
    first = spool.next_batches(1, skip=[spool.next_batches(1)[0].id])[0]
    assert first.seq == 0
    spool.delete(first.id)
    assert [b.seq for b in spool.next_batches(10)] == [99, 1, 2]
    assert spool.stats().depth == 3 and spool.stats().bytes == 300


def test_range_selection_for_backlog_and_fresh_batches(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", 10_000)
    ids = [put(spool, seq).id for seq in range(4)]
    assert [b.seq for b in spool.next_batches(10, up_to=ids[1])] == [0, 1]
    assert [b.seq for b in spool.next_batches(10, after=ids[1])] == [2, 3]
    assert spool.next_batches(1, newest=True)[0].id == ids[3]


def test_full_spool_evicts_oldest_bulk_first_and_counts_it(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", 450)
    put(spool, 50, priority=PRIORITY_EVENT)
    for seq in range(5):
        put(spool, seq)
    stats = spool.stats()
    assert stats.bytes <= 450 and stats.evicted == 2
    assert [b.seq for b in spool.next_batches(10)] == [50, 2, 3, 4]


def test_eviction_spares_batches_in_flight_until_only_they_are_left(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", 450)
    first, second = put(spool, 0), put(spool, 1)
    assert spool.sending(first.id)
    for seq in range(2, 6):
        put(spool, seq)
    assert not spool.sending(second.id)  # evicted after it was read: not to be sent
    assert [b.seq for b in spool.next_batches(10)] == [0, 3, 4, 5]  # 1 and 2 went, not 0
    assert spool.stats().evicted == 2
    spool.delete(first.id)  # acknowledged: the count stays what was lost
    assert spool.stats().evicted == 2
    for path, answer in [("acked", "puback"), ("failed", "not sent")]:
        lone = Spool(tmp_path / f"{path}.sqlite", 150)
        spool_id = put(lone, 0).id
        assert lone.sending(spool_id)
        put(lone, 1)  # the bound wins over a batch in flight...
        assert [b.seq for b in lone.next_batches(10)] == [1]
        assert lone.stats().evicted == 0  # ...which may still be delivered
        if answer == "puback":
            lone.delete(spool_id)
        else:
            lone.not_sending((spool_id,))
        assert lone.stats().evicted == (0 if answer == "puback" else 1), answer
        lone.not_sending((spool_id,))
        assert lone.stats().evicted == (0 if answer == "puback" else 1), answer


def test_a_damaged_spool_is_moved_aside_and_a_fresh_one_started(tmp_path, caplog):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 10_000)
    for seq in range(50):
        put(spool, seq, size=2000)
    spool.close()
    data = bytearray(path.read_bytes())
    for offset in range(4096, len(data), 512):
        data[offset:offset + 64] = os.urandom(64)
    path.write_bytes(bytes(data))
    spool = Spool(path, 10_000)
    assert spool.stats().moved_aside == 1 and spool.stats().depth == 0
    assert list(tmp_path.glob("spool.sqlite.corrupt-*"))
    assert "is damaged" in caplog.text
    put(spool, 1)
    assert spool.stats().depth == 1


def test_garbage_file_is_moved_aside(tmp_path):
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    spool = Spool(path, 10_000)
    assert spool.stats().moved_aside == 1


@pytest.fixture
def tiny_filesystem(tmp_path):
    require_tool("mount")
    mountpoint = tmp_path / f"tiny-{uuid.uuid4().hex[:6]}"
    mountpoint.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs",
                             str(mountpoint)], capture_output=True, text=True)
    if result.returncode != 0:
        if os.environ.get("AGENT_REQUIRE_SYSTEM") == "1":
            pytest.fail(f"cannot mount a small tmpfs for the disk-full test: {result.stderr}")
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
    yield mountpoint
    subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_disk_full_is_survived_counted_and_recovered(tiny_filesystem):
    spool = Spool(tiny_filesystem / "spool.sqlite", 10 * 2**20, reserve_bytes=256 * 1024)
    reserve = tiny_filesystem / "spool.sqlite.reserve"
    assert reserve.exists()
    kept = [put(spool, seq, size=20_000) for seq in range(60)]
    lost = [b for b in kept if b.id is None]
    assert lost and spool.stats().not_kept == len(lost)
    assert all(b.envelope for b in lost)  # still handed over, from memory
    on_disk = spool.next_batches(100)
    assert len(on_disk) == len(kept) - len(lost)
    for batch in on_disk:       # the broker acknowledges the backlog
        spool.delete(batch.id)
    assert not reserve.exists()
    assert spool.next_batches(100) == [] and spool.stats().depth == 0
    assert put(spool, 100, size=20_000).id is not None   # writing works again
    assert spool.stats().depth == 1


def fill(directory, name):
    """Something else fills the disk."""
    with (directory / name).open("wb", buffering=0) as filler, contextlib.suppress(OSError):
        while True:
            filler.write(bytes(4096))


def test_a_full_spool_on_a_full_disk_counts_only_what_it_loses(tiny_filesystem):
    """Evictions are counted when they commit: those of a put that fails are rolled back with
    it, and a batch in flight keeps its row until its PUBACK deletes it."""
    spool = Spool(tiny_filesystem / "spool.sqlite", 500_000, reserve_bytes=64 * 1024)
    kept = [put(spool, seq, size=100_000) for seq in range(5)]
    assert all(b.id is not None for b in kept) and spool.stats().evicted == 0
    assert spool.sending(kept[0].id)
    fill(tiny_filesystem, "filler")
    # Made room for a bigger batch than the WAL has held, then could not grow it: undone.
    assert put(spool, 5, size=200_000).id is None
    stats = spool.stats()
    assert (stats.depth, stats.evicted, stats.not_kept) == (5, 0, 1)
    spool.delete(kept[0].id)  # its PUBACK
    assert [b.seq for b in spool.next_batches(20)] == [1, 2, 3, 4]
    (tiny_filesystem / "filler").unlink()
    assert put(spool, 6, size=100_000).id is not None
    assert spool.stats().evicted == 0
    assert put(spool, 7, size=100_000).id is not None  # now the spool is full: one goes
    assert [b.seq for b in spool.next_batches(20)] == [2, 3, 4, 6, 7]
    assert spool.stats().evicted == 1


def test_an_acknowledged_batch_the_disk_would_not_let_go_is_evicted_first_uncounted(tmp_path):
    spool = Spool(tmp_path / "s.sqlite", 350)
    batches = [put(spool, seq) for seq in range(3)]
    # The state a PUBACK leaves when its DELETE fails on a full disk and the reserve is gone
    # (that needs a WAL truncated to nothing on a full filesystem; the test above covers the
    # path that releases the reserve).
    spool._undeleted.add(batches[2].id)
    put(spool, 3)
    assert spool.stats().depth == 3 and spool.stats().evicted == 0
    assert [b.seq for b in spool.next_batches(10)] == [0, 1, 3]


def file_size(path):
    return path.stat().st_size if path.exists() else 0


@pytest.mark.parametrize("sizes", [
    (24_000,),        # minute batches
    (150, 2_050),     # small events, and batches just over half a page (one page each)
    (60, 300, 9_000, 30_000),
])
def test_database_and_wal_stay_within_the_documented_disk_bound(tmp_path, sizes):
    """docs/operations.md: the database within max_mb + 64 KiB; the WAL within a quarter of
    max_mb plus the last write (a batch and the pages its evictions zeroed, a few tree pages);
    at rest, with nothing left to send, no WAL at all."""
    bound = int(0.1 * 2**20)
    path = tmp_path / "spool.sqlite"
    wal = tmp_path / "spool.sqlite-wal"
    spool = Spool(path, bound)
    assert spool.wal_limit == bound // 4
    last_write = 2 * max(sizes) + 8 * 4096
    peak_database = peak_wal = 0
    for seq in range(200):
        put(spool, seq, size=sizes[seq % len(sizes)])
        if seq % 3 == 0:  # the broker acknowledges some; the spool stays full
            spool.delete(spool.next_batches(1)[0].id)
        assert spool.stats().bytes <= bound
        peak_database = max(peak_database, file_size(path))
        peak_wal = max(peak_wal, file_size(wal))
    assert peak_database <= bound + 64 * 1024
    assert peak_wal <= spool.wal_limit + last_write
    assert spool.stats().evicted > 0  # the bound was reached, again and again
    for batch in spool.next_batches(10_000):  # the backlog drains
        spool.delete(batch.id)
    assert file_size(wal) == 0 and file_size(path) <= bound + 64 * 1024


def test_a_closed_spool_file_is_read_per_lane_and_consent_without_changing_it(tmp_path):
    path = tmp_path / "spool.sqlite"
    spool = Spool(path, 100_000)
    for seq in range(3):
        put(spool, seq)
    spool.put("telemetry", b"b" * 16, 3, b"x" * 50, consent=1)
    put(spool, 99, size=30, priority=PRIORITY_EVENT)
    spool.close()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    found = read_spool_file(path)

    assert [(lane.priority, lane.consent, lane.batches, lane.bytes) for lane in found.lanes] == [
        (PRIORITY_EVENT, 2, 1, 30 + SEAL_OVERHEAD), (1, 1, 1, 50 + SEAL_OVERHEAD),
        (1, 2, 3, 300 + 3 * SEAL_OVERHEAD)]  # bytes on disk: each row sealed at rest
    assert (found.depth, found.bytes) == (5, 380 + 5 * SEAL_OVERHEAD)
    assert found.oldest_created is not None
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()
            if p.name in before} == before
    with pytest.raises(FileNotFoundError, match="no spool file"):
        read_spool_file(tmp_path / "none.sqlite")


# At rest (issue #25, item 6): sealed rows, private files, nothing left behind in the file.
MARKER = b"PLAINTEXT-MARKER-"


def spool_files(folder):
    return {p.name: p for p in folder.iterdir() if p.name.startswith("spool.sqlite")}


def raw_bytes(folder) -> bytes:
    return b"".join(p.read_bytes() for p in spool_files(folder).values())


def test_rows_are_sealed_at_rest_in_private_files_and_come_back_whole(tmp_path):
    state = tmp_path / "state"
    spool = Spool(state / "spool.sqlite", 1 << 20, at_rest=AtRest(state))
    envelopes = [MARKER + bytes([n]) * 200 for n in range(5)]
    for seq, envelope in enumerate(envelopes):
        spool.put("telemetry", b"b" * 16, seq, envelope, consent=seq % 3)
    assert [b.envelope for b in spool.next_batches(10)] == envelopes
    assert MARKER not in raw_bytes(state)
    assert oct(stat.S_IMODE(state.stat().st_mode)) == oct(0o700)
    for path in state.iterdir():
        assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(0o600), path.name
    assert {p.name for p in state.glob("spool-*.key")} == {
        "spool-off.key", "spool-vehicle-health.key", "spool-full.key"}
    assert spool._db.execute("PRAGMA secure_delete").fetchone()[0] == 1
    spool.close()


def test_a_destroyed_key_makes_its_rows_unreadable_and_they_are_dropped(tmp_path):
    state = tmp_path / "state"
    at_rest = AtRest(state)
    spool = Spool(state / "spool.sqlite", 1 << 20, at_rest=at_rest)
    spool.put("telemetry", b"b" * 16, 0, MARKER + b"full", consent=2)
    spool.put("telemetry", b"b" * 16, 1, MARKER + b"health", consent=1)
    assert at_rest.forget_above(1) == ["full"]
    assert not (state / "spool-full.key").exists()
    assert [b.envelope for b in spool.next_batches(10)] == [MARKER + b"health"]
    assert spool.stats().unreadable == 1 and spool.stats().depth == 1
    # A new key for `full` opens nothing of the old one.
    spool.put("telemetry", b"b" * 16, 2, MARKER + b"new", consent=2)
    assert [b.seq for b in spool.next_batches(10)] == [1, 2]
    spool.close()


def test_a_row_cannot_be_moved_to_another_consent_rank(tmp_path):
    state = tmp_path / "state"
    spool = Spool(state / "spool.sqlite", 1 << 20, at_rest=AtRest(state))
    spool.put("telemetry", b"b" * 16, 0, MARKER + b"full", consent=2)
    spool.put("telemetry", b"b" * 16, 1, MARKER + b"health", consent=1)
    # Someone with the file relabels the full row as vehicle-health, hoping it survives a
    # downgrade: its associated data no longer matches, so it is dropped, not sent.
    spool._db.execute("UPDATE batches SET consent = 1 WHERE seq = 0")
    assert [b.seq for b in spool.next_batches(10)] == [1]
    assert spool.stats().unreadable == 1
    spool.close()


def test_plaintext_rows_of_an_older_version_are_sealed_in_place_and_still_sent(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    path = state / "spool.sqlite"
    old = sqlite3.connect(path)  # the schema before sealing at rest, as a 0644 file
    old.executescript("""
        CREATE TABLE batches (id INTEGER PRIMARY KEY AUTOINCREMENT, priority INTEGER NOT NULL,
            topic TEXT NOT NULL, boot BLOB NOT NULL, seq INTEGER NOT NULL,
            created REAL NOT NULL, envelope BLOB NOT NULL,
            consent INTEGER NOT NULL DEFAULT 2);""")
    for seq in range(3):
        old.execute("INSERT INTO batches (priority, topic, boot, seq, created, envelope) "
                    "VALUES (1, 'telemetry', ?, ?, 0, ?)", (b"b" * 16, seq, MARKER + b"old" * 50))
    old.execute("INSERT INTO batches (priority, topic, boot, seq, created, envelope) "
                "VALUES (1, 'telemetry', ?, 9, 0, ?)", (b"b" * 16, MARKER + b"delivered" * 50))
    old.commit()
    old.execute("DELETE FROM batches WHERE seq = 9")  # freed before secure_delete: in the file
    old.commit()
    old.close()
    os.chmod(path, 0o644)
    assert MARKER in path.read_bytes()

    spool = Spool(path, 1 << 20, at_rest=AtRest(state))
    assert [b.envelope for b in spool.next_batches(10)] == [MARKER + b"old" * 50] * 3
    assert MARKER not in raw_bytes(state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    spool.close()
