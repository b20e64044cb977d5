"""Files the agent keeps: written so that readers see the old bytes or the new ones, never a
mix or a gap, surviving a power cut once the call returns; private to the agent's user where
they hold the owner's data (state files 0600 in a 0700 folder); destroyed, not just unlinked,
where they hold a key."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace `path` with `data`: a new file (created with `mode` before any byte is in it)
    is written, fsync'd and renamed over `path`, and the folder is synced so that the rename
    is on disk too. Never written into an existing file, whose mode (0644?) and open readers a
    new private key would inherit; never half-written."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)


def sync_folder(folder: Path) -> None:
    """Make the folder's entries (a rename, an unlink) durable."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def private_folder(folder: Path) -> Path:
    """`folder`, created if needed, readable by the agent's user only (0700): the state folder
    holds the owner's data and the keys that seal it. An existing folder is tightened too
    (one made by an older version, or by systemd's StateDirectoryMode)."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def private_file(path: Path) -> Path:
    """`path` as a file of mode 0600, created empty if missing (before anything writes into
    it, so no byte is ever readable by others), tightened if an older version made it 0644."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.fchmod(descriptor, 0o600)
    finally:
        os.close(descriptor)
    return path


def destroy(path: Path) -> bool:
    """Overwrite `path` with zeros, fsync, unlink, sync the folder; False if it was not there.
    On a plain filesystem the old bytes are gone; flash that remaps writes (an SD card's
    wear levelling) may keep the old block until it is reused, which nothing above the
    device can prevent (docs/privacy.md)."""
    try:
        descriptor = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return False
    try:
        size = os.fstat(descriptor).st_size
        os.pwrite(descriptor, bytes(size), 0)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    path.unlink()
    sync_folder(path.parent)
    return True
