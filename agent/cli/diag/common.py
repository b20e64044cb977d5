"""What every `edge-agent diag` command shares: finding the daemon, output, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.runtime.control import ControlDenied, ControlRefused, ControlUnavailable, request

if TYPE_CHECKING:
    from rich.console import Console

DEFAULT_CONFIG = Path("/etc/edge-agent/config.toml")
DEFAULT_SOCKET = Path("/run/edge-agent/control.sock")
DEFAULT_GROUP = "edge-agent-diag"

# A unit whose two cores are saturated answered `status` in several seconds: wait, do not fail.
DEFAULT_TIMEOUT = 30.0

EXIT_OK = 0
EXIT_PROBLEM = 1
EXIT_NOT_RUNNING = 3
EXIT_DENIED = 4  # the agent may be running, but this user may not ask it


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--json", action="store_true", help="machine-readable JSON output")
    parent.add_argument("--socket", type=Path,
                        help=f"the agent's control socket (default: from --config, else "
                             f"{DEFAULT_SOCKET})")
    parent.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the agent's config file (default: %(default)s)")
    parent.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help="seconds to wait for the agent's answer (default: %(default)s; "
                             "a busy unit can take a while)")
    return parent


def socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return args.socket
    # Only [control] and [state]: the whole config would import every source type.
    from agent.config.schema import control_socket_path, read_control_settings
    from agent.errors import ConfigError

    try:
        return control_socket_path(read_control_settings(args.config), {})
    except ConfigError:
        return DEFAULT_SOCKET  # a diag-group member may not read the config: use the default


def diag_group(args: argparse.Namespace) -> str:
    """The group whose members may use the socket: from the config when it can be read."""
    from agent.config.schema import read_control_settings
    from agent.errors import ConfigError

    try:
        return read_control_settings(args.config).control.group or DEFAULT_GROUP
    except ConfigError:  # unreadable or invalid: the packaged default is the likely one
        return DEFAULT_GROUP


def ask(args: argparse.Namespace, command: str, **arguments: Any) -> Any:
    return request(socket_path(args), command, arguments,
                   timeout=getattr(args, "timeout", DEFAULT_TIMEOUT))


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def unreachable(args: argparse.Namespace, exc: ControlUnavailable) -> dict[str, Any]:
    """Why the daemon could not be asked, for --json: `running` is unknown (null) when this
    user was denied, since the agent may well be up."""
    if isinstance(exc, ControlDenied):
        return {"running": None, "denied": True,
                "error": f"{exc}: join the group {diag_group(args)} (or run as root)"}
    return {"running": False, "denied": False, "error": str(exc)}


def not_reachable(args: argparse.Namespace, exc: ControlUnavailable) -> int:
    """Say why the daemon could not be asked: denied (exit 4) is not "not running" (exit 3)."""
    document = unreachable(args, exc)
    denied, message = document["denied"], document["error"]
    if getattr(args, "json", False):
        print(json.dumps(document))
    else:
        print(f"edge-agent: {message}", file=sys.stderr)
        if not denied:
            print("Offline checks still work: edge-agent diag selftest", file=sys.stderr)
    return EXIT_DENIED if denied else EXIT_NOT_RUNNING


def run_against_daemon(args: argparse.Namespace, command: str, render: Callable[[Any], int],
                       *, json_exit: Callable[[Any], int] | None = None,
                       when_down: Callable[[ControlUnavailable], int] | None = None,
                       **arguments: Any) -> int:
    """Ask the daemon; print JSON or render for a person; say clearly when it is not running.
    A command that answers in a sentence (`flush`, `consent`) prints it, or with --json an
    object: {"running": true, "command": ..., "result": the sentence}. `json_exit` gives the
    exit code after the JSON (default: 1 when the answer has warnings); `when_down` answers
    instead when the agent is not running, from what can be read without it."""
    try:
        result = ask(args, command, **arguments)
    except ControlDenied as exc:
        return not_reachable(args, exc)
    except ControlRefused as exc:
        if args.json:
            print(json.dumps({"running": True, "error": str(exc)}))
        else:
            print(f"edge-agent: {exc}", file=sys.stderr)
        return EXIT_PROBLEM
    except ControlUnavailable as exc:
        if when_down is not None:
            return when_down(exc)
        return not_reachable(args, exc)
    if args.json:
        document = ({"running": True, "command": command, "result": result}
                    if isinstance(result, str) else result)
        print(json.dumps(document, indent=2, default=str))
        return (json_exit or render_exit_code)(result)
    return render(result)


def render_exit_code(result: Any) -> int:
    if isinstance(result, dict) and result.get("warnings"):
        return EXIT_PROBLEM
    return EXIT_OK


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"
