"""`edge-agent diag bundle`: one tarball with what support needs to see, and nothing the
owner's consent or privacy controls withhold (agent/privacy/disclosure.py says what and why);
`withheld.json` in the bundle lists what was left out."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

from agent.cli.diag.checks import run_checks
from agent.cli.diag.common import EXIT_OK, ask, common_options, unreachable
from agent.cli.diag.queue import spool_file_document
from agent.config.schema import load_config
from agent.errors import AgentError
from agent.privacy import consent as privacy
from agent.privacy.disclosure import redact_config, withholds_vehicle_id, without_vehicle_id
from agent.runtime.control import ControlUnavailable

NO_JOURNAL = """\
journalctl is not on this machine, so no log lines are included.
The agent logs to stderr. Under systemd that is the journal (journalctl -u edge-agent);
started by hand or by another supervisor, the logs are wherever its stderr went: the terminal,
or the file or logger that supervisor writes.
"""


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bundle", parents=[common_options()], help="a support tarball",
        description="Write a .tar.gz with status, bus and queue counters, the config with "
                    "secrets, zones and the pseudonym key withheld, selftest results and recent "
                    "logs (journalctl -u edge-agent); the vehicle id too unless the consent in "
                    "force sends it. withheld.json in the bundle lists what was left out. With "
                    "the agent stopped, the queue is read from the spool file; without "
                    "journalctl, the bundle says where the logs are instead.")
    parser.add_argument("--output", "-o", type=Path,
                        help="where to write (default: edge-agent-bundle-TIME.tar.gz)")
    parser.add_argument("--log-lines", type=int, default=2000,
                        help="journal lines to include (default: %(default)s)")
    parser.set_defaults(func=_do_bundle)


def _do_bundle(args: argparse.Namespace) -> int:
    output = args.output or Path(f"edge-agent-bundle-{time.strftime('%Y%m%d-%H%M%S')}.tar.gz")
    members: dict[str, bytes] = {}
    for command in ("status", "buses", "queue"):
        try:
            members[f"{command}.json"] = _json(ask(args, command))
        except ControlUnavailable as exc:
            members[f"{command}.json"] = _json(spool_file_document(args, exc) if command == "queue"
                                               else unreachable(args, exc))
    members["selftest.json"] = _json([asdict(c) for c in run_checks(args.config)])
    withheld: list[str] = []
    if args.config.is_file():
        redacted = redact_config(args.config.read_text(encoding="utf-8"))
        members["config.toml"] = redacted.text.encode()
        withheld += [f"config.toml: {item}" for item in redacted.withheld]
    journal, logs = _journal(args.log_lines)
    members["journal.txt"] = journal
    withheld += _withhold_vehicle_id(args, members)
    withheld.append("signal values of every class: the bundle holds none (no signals, live "
                    "or gps output)")
    members["withheld.json"] = _json({"withheld": withheld})
    with tarfile.open(output, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(f"edge-agent-bundle/{name}")
            info.size = len(data)
            info.mtime = int(time.time())
            archive.addfile(info, io.BytesIO(data))
    if args.json:
        print(json.dumps({"bundle": str(output), "members": sorted(members), "logs": logs}))
    else:
        print(f"wrote {output} ({', '.join(sorted(members))}); logs: {logs}")
    return EXIT_OK


def _withhold_vehicle_id(args: argparse.Namespace, members: dict[str, bytes]) -> list[str]:
    """Replace the vehicle id in every member unless the consent in force sends it (the
    consent read as the agent reads it, failing closed to `off`)."""
    try:
        config = load_config(args.config)
    except AgentError as exc:
        return [f"NOT withheld: the vehicle id, which the bundle cannot know without the "
                f"config ({exc})"]
    consent = privacy.effective_consent(config.privacy, config.state.directory)
    if not withholds_vehicle_id(consent.level, config.privacy.pseudonym.enabled):
        return []
    replaced = 0
    for name, data in members.items():
        members[name], count = without_vehicle_id(data, config.vehicle.id)
        replaced += count
    reason = "consent off" if consent.level == "off" else "a pseudonym is in use"
    return [f"the vehicle id ({reason}): replaced by <vehicle> in {replaced} places"]


def _json(document: object) -> bytes:
    return json.dumps(document, indent=2, default=str).encode()


def _journal(lines: int) -> tuple[bytes, str]:
    """The agent's recent log lines for journal.txt, and a line saying where they came from
    (or, without journalctl, where to find them)."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return NO_JOURNAL.encode(), "not included: " + NO_JOURNAL.splitlines()[0]
    command = [journalctl, "-u", "edge-agent", "-n", str(lines), "--no-pager"]
    try:
        result = subprocess.run(command, capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{' '.join(command)}: {exc}\n".encode(), f"journalctl failed: {exc}"
    return (f"$ {' '.join(command)}\n".encode() + result.stdout + result.stderr,
            f"journal.txt ({' '.join(command[:3])}, exit {result.returncode})")
