"""The config store under SIGKILL at every file-system step of an apply and a roll-back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.ota.store import ConfigStore
from agent.runtime.files import atomic_write

REPO = Path(__file__).resolve().parents[3]
OLD, NEW = b"old update v1" * 100, b"new update v2" * 300

# Runs in a child: every os.open/fsync/replace/unlink is a step; SIGKILL itself at step N.
CHILD = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from agent.ota.store import ConfigStore

    directory, kill_at, action = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    store = ConfigStore(directory)
    steps = 0

    def step(real):
        def wrapped(*args, **kwargs):
            global steps
            steps += 1
            if steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(*args, **kwargs)
        return wrapped

    for name in ("open", "fsync", "replace", "unlink"):
        setattr(os, name, step(getattr(os, name)))
    if action == "commit":
        store.commit(NEW, 2)
    else:
        store.roll_back()
""").replace("NEW", repr(NEW))


def run_child(state: Path, kill_at: int, action: str) -> int:
    return subprocess.run([sys.executable, "-c", CHILD, str(state), str(kill_at), action],
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60).returncode


@pytest.mark.parametrize("action", ["commit", "roll_back"])
def test_sigkill_at_every_step_leaves_the_old_or_the_new_config(tmp_path, action):
    outcomes = set()
    kill_at = 1
    while True:
        state = tmp_path / f"{action}-{kill_at}"
        before = ConfigStore(state)
        before.commit(OLD, 1)
        before.confirm()
        if action == "roll_back":
            before.commit(NEW, 2)
        code = run_child(state, kill_at, action)
        after = ConfigStore(state)
        current = after.current()
        if action == "commit":
            assert current in (OLD, NEW), f"killed at step {kill_at}: {current!r:.40}"
            assert after.highest() >= 1
            if current == NEW:
                assert after.previous() == OLD
        else:
            assert current in (NEW, OLD), f"killed at step {kill_at}: {current!r:.40}"
            assert after.highest() == 2
        assert not list(after.directory.glob(".*.tmp"))
        outcomes.add(current)
        if code == 0:
            break
        assert code == -signal.SIGKILL
        kill_at += 1
    assert kill_at > 5  # every step of the sequence was hit
    assert outcomes == {OLD, NEW}


def test_commit_keeps_the_last_known_good_and_roll_back_restores_it(tmp_path):
    store = ConfigStore(tmp_path)
    assert store.current() is None and store.highest() == 0
    store.commit(OLD, 1)
    assert store.current() == OLD and store.previous() is None and store.pending() == 1
    store.confirm()
    store.commit(NEW, 2)
    assert (store.current(), store.previous(), store.highest()) == (NEW, OLD, 2)
    store.roll_back()
    assert (store.current(), store.previous(), store.pending()) == (OLD, None, None)
    assert store.highest() == 2  # a rolled-back version is never taken again
    store.roll_back()
    assert store.current() is None


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "file"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
    assert target.stat().st_mode & 0o777 == 0o600


def test_reset_floor_forgets_the_applied_updates_and_sets_the_floor(tmp_path):
    store = ConfigStore(tmp_path)
    store.commit(OLD, 1)
    store.confirm()
    store.commit(NEW, 2**70)  # what a trusted signer's slip left before versions were bounded
    store.save_dbc("ab.dbc", b"BO_ 1 X: 8 Y")
    store.save_dbc("cd.arxml", b"<AUTOSAR/>")
    store.reset_floor(3)
    assert (store.current(), store.previous(), store.pending(), store.highest()) == \
        (None, None, None, 3)
    assert not list(store.dbc_directory.iterdir())
    store.commit(OLD, 4)  # the next update above the new floor applies as usual
    assert (store.current(), store.highest()) == (OLD, 4)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_reset_floor_run_as_root_leaves_the_floor_readable_by_the_service_user(tmp_path):
    store = ConfigStore(tmp_path)
    os.chown(store.directory, 65534, 65534)  # the service user's folder
    store.reset_floor(3)
    written = (store.directory / "highest").stat()
    assert (written.st_uid, written.st_gid) == (65534, 65534)


def test_pruning_removes_delivered_databases_of_every_format(tmp_path):
    """A delivered ARXML keeps its suffix (the loader needs it), so pruning cannot look for
    *.dbc alone: what no kept update names goes, whatever its suffix."""
    store = ConfigStore(tmp_path / "state")
    store.save_dbc("ab.dbc", b"BO_ 1 X: 8 Y")
    store.save_dbc("cd.arxml", b"<AUTOSAR/>")
    store.save_dbc("ef.kcd", b"<NetworkDefinition/>")
    store.keep_only_dbc({"ef.kcd"})
    assert sorted(p.name for p in store.dbc_directory.iterdir()) == ["ef.kcd"]
