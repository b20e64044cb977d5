"""`edge-agent config reset-floor FILE`: the way back for a vehicle whose floor is too high.

The anti-rollback floor (docs/ota.md) only rises, and no update can change it: a trusted
signer's mistake, such as a version at the limit, leaves every later update `not-newer`. This
command lowers it on the vehicle itself, so only someone with root (or the service user's)
access to the state folder can; the agent must be stopped, because the version it runs counts
as a floor too. It forgets the applied updates (the agent starts on its local file) and sets
the floor to the local file's version, or to `--to VERSION`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent.cli.diag.common import DEFAULT_SOCKET
from agent.config.schema import MAX_CONFIG_VERSION, control_socket_path, load_config
from agent.errors import AgentError
from agent.ota.store import ConfigStore
from agent.runtime.control import ControlRefused, ControlUnavailable, request


def add_action(actions: argparse._SubParsersAction) -> None:
    reset = actions.add_parser(
        "reset-floor", help="forget applied updates and lower the anti-rollback floor",
        description="Recover a vehicle that takes no config update because its anti-rollback "
                    "floor is too high (a signed version at the limit, say). Stop the agent "
                    "first; run as root or as the service user. The applied updates are "
                    "forgotten: the agent starts on FILE alone and takes the next update whose "
                    "version is above the new floor.")
    reset.add_argument("file", type=Path, help="the agent's config file")
    reset.add_argument("--to", type=int, metavar="VERSION",
                       help="the new floor (default: the version in FILE); updates at or "
                            "below it stay refused")
    reset.add_argument("--socket", type=Path,
                       help="the agent's control socket, to check that the agent is stopped "
                            f"(default: from FILE and {DEFAULT_SOCKET})")
    reset.set_defaults(func=do_reset_floor)


def do_reset_floor(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    floor = config.version if args.to is None else args.to
    if not 0 <= floor <= MAX_CONFIG_VERSION:
        raise AgentError(f"--to {floor}: give a version from 0 to {MAX_CONFIG_VERSION}")
    sockets = ([args.socket] if args.socket is not None
               else [control_socket_path(config), DEFAULT_SOCKET])
    for path in sockets:
        if _answers(path):
            raise AgentError(f"the agent is running (it answers on {path}): stop it first "
                             "(sudo systemctl stop edge-agent), then start it after the reset")
    directory = config.state.directory / "ota"
    if not directory.is_dir():
        print(f"{directory}: no update was ever applied here; nothing to reset")
        return 0
    store = ConfigStore(config.state.directory)
    before = store.highest()
    try:
        store.reset_floor(floor)
    except PermissionError as exc:
        raise AgentError(f"{exc.filename}: permission denied; run as root (sudo) or as the "
                         "service user") from exc
    print(f"{directory}: applied updates forgotten, anti-rollback floor {before} -> {floor}. "
          f"Start the agent; it runs {args.file} until an update above version {floor} "
          "arrives.")
    return 0


def _answers(path: Path) -> bool:
    """Whether an agent listens on `path`. The probe names no command: any answer, even
    "unknown command", means an agent is there, and none has to do any work for it."""
    try:
        request(path, "", timeout=10.0)
    except ControlRefused:
        return True
    except ControlUnavailable as exc:
        if isinstance(exc.__cause__, FileNotFoundError | ConnectionRefusedError):
            return False
        raise AgentError(f"cannot tell whether the agent is running: {exc}") from exc
    return True
