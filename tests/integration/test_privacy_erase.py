"""`edge-agent privacy erase` (issue #25, item 6): after it, spooled data is unreadable, even
in a copy of the card taken before it.

The spool is filled through the agent's own Spool and AtRest, the files are copied raw (what
a thief, or blocks the SD card has not reused yet, would still hold), then the command runs
as a separate process. Neither the spool file nor the copy holds a byte of plaintext, and no
row of either opens with any key left in the state folder.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from agent.output.spool import PRIORITY_EVENT, Spool
from agent.privacy.at_rest import NONCE_BYTES, AtRest, associated_data
from tests.helpers.agent_setup import REPO, _env, write_agent_config

MARKER = b"OWNER-DROVE-HOME-"


def rows(path: Path) -> list[tuple[str, bytes, int, int, bytes]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT topic, boot, seq, consent, envelope FROM batches").fetchall()


def opens_with_any_key(state: Path, row: tuple[str, bytes, int, int, bytes]) -> bool:
    topic, boot, seq, consent, stored = row
    for key_file in state.glob("spool-*.key"):
        cipher = ChaCha20Poly1305(key_file.read_bytes())
        try:
            cipher.decrypt(stored[1:1 + NONCE_BYTES], stored[1 + NONCE_BYTES:],
                           associated_data(consent, topic, boot, seq))
        except InvalidTag:
            continue
        return True
    return False


def test_erase_leaves_no_plaintext_and_no_row_that_opens(tmp_path, dev_pki):
    config = write_agent_config(tmp_path, port=1, tls=dev_pki.client("demo-0001"))
    state = tmp_path / "state"
    spool = Spool(state / "spool.sqlite", 1 << 20, at_rest=AtRest(state))
    for seq in range(6):
        spool.put("telemetry", b"b" * 16, seq, MARKER + bytes([seq]) * 300, consent=seq % 3)
    spool.put("events", b"b" * 16, 0, MARKER + b"stop at home", priority=PRIORITY_EVENT)
    spool.close()
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    for path in state.glob("spool.sqlite*"):
        shutil.copy(path, stolen / path.name)
    before = rows(stolen / "spool.sqlite")
    assert len(before) == 7
    assert all(opens_with_any_key(state, row) for row in before)  # the check can succeed

    erase = subprocess.run([sys.executable, "-m", "agent", "privacy", "erase", "--config",
                            str(config), "--socket", str(tmp_path / "no-agent.sock"),
                            "--json"], capture_output=True, text=True, timeout=60,
                           env=_env(), cwd=REPO)
    assert erase.returncode == 0, erase.stderr
    assert '"dropped": 7' in erase.stdout and '"by": "offline"' in erase.stdout

    assert list(state.glob("spool-*.key")) == []
    assert rows(state / "spool.sqlite") == []
    for folder in (state, stolen):
        raw = b"".join(p.read_bytes() for p in folder.glob("spool.sqlite*"))
        assert MARKER not in raw
    after = rows(stolen / "spool.sqlite")
    assert len(after) == 7
    # The agent starts again: new keys, and still nothing of the copy opens.
    spool = Spool(state / "spool.sqlite", 1 << 20, at_rest=AtRest(state))
    spool.put("telemetry", b"b" * 16, 99, b"after", consent=2)
    spool.close()
    assert list(state.glob("spool-*.key"))
    assert not any(opens_with_any_key(state, row) for row in after)
