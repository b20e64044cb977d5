"""Logs to replay and the agent configs that replay them for `edge-agent verify`: the bundled
drive cut short, one replay source per bus, no uplink (the signing key is never used)."""

from __future__ import annotations

from pathlib import Path

import can

from agent.runtime.verify import VerifyReport
from tests.helpers.agent_setup import BUNDLED_DRIVE


def short_drive(folder: Path, seconds: float) -> Path:
    """The bundled drive's first `seconds`, written as `folder`/short.log."""
    short = folder / "short.log"
    with can.LogReader(str(BUNDLED_DRIVE)) as reader, can.Logger(str(short)) as writer:
        start = None
        for frame in reader:
            start = frame.timestamp if start is None else start
            if frame.timestamp - start > seconds:
                break
            writer.on_message_received(frame)
    return short


def replay_source(name: str, log: Path, dbc: Path) -> str:
    """A [[sources]] table replaying the frames of channel `name` in `log` through `dbc`."""
    return (f'[[sources]]\nname = "{name}"\ntype = "replay"\npath = "{log}"\n'
            f'channel = "{name}"\ndbc = ["{dbc}"]\n\n')


def write_verify_config(folder: Path, *, window: float, sources: str, rules: str) -> Path:
    """`folder`/agent.toml: `sources` sampled by the [[sampling.signals]] `rules`, sealed
    every `window` seconds, for `verify` to run (no uplink; the key is never used)."""
    config = folder / "agent.toml"
    config.write_text(f"""[vehicle]
id = "verify-test"

[keys]
signing_key = "{folder / 'unused.key'}"

[state]
directory = "{folder / 'state'}"

[uplink]
tls = false

[batch]
window = {window}

{sources}
{rules}""", encoding="utf-8")
    return config


def assert_exact(report: VerifyReport) -> None:
    different = {key: (r.mismatched, r.missing, r.extra, r.examples)
                 for key, r in report.signals.items() if r.differences}
    assert not different, f"{len(different)} signals differ: {list(different.items())[:5]}"
