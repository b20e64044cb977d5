"""`tools/demo`: the whole data path on this machine, no hardware and no setup.

Makes throwaway keys and certificates, starts a private Mosquitto with mutual TLS on a free
loopback port, runs the agent on the bundled drive (the repository's config.toml with demo
overrides: 10 s windows, the drive played 4x), runs the backend verifier beside it, shows the
batches arriving verified, and cleans up after about a minute. The backend writes its Parquet
data set to `dataset/` in the working folder: with `--keep` or `--workdir DIR` it stays, and
the demo prints the `tools/backend query` commands that read it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from agent.output.batch import size_per_sample
from agent.wire.keys import generate_key_pair
from devkit.broker import BrokerUnavailable, MosquittoBroker, ensure_mosquitto
from devkit.pki import make_dev_pki

REPO = Path(__file__).resolve().parents[2]
VEHICLE = "demo-0001"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tools/demo",
        description="Run the agent on the bundled drive against a local Mosquitto with mutual "
                    "TLS and verify every batch with the backend tool.")
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds to run the agent (default: %(default)s)")
    parser.add_argument("--speed", type=float, default=4.0,
                        help="replay speed factor of the drive (default: %(default)s)")
    parser.add_argument("--window", type=float, default=10.0,
                        help="batch window in drive seconds (default: %(default)s)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the working folder (keys, certificates, logs, the Parquet "
                             "data set)")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="work in DIR (new or empty) instead of a temporary folder, and "
                             "keep it")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="demo: %(message)s")
    if args.workdir is not None:
        if args.workdir.exists() and (not args.workdir.is_dir() or any(args.workdir.iterdir())):
            say(f"--workdir {args.workdir}: must be a new or empty folder")
            return 2
        args.workdir.mkdir(parents=True, exist_ok=True)
        workdir, keep = args.workdir.resolve(), True
    else:
        workdir, keep = Path(tempfile.mkdtemp(prefix="edge-agent-demo-")), args.keep
    say(f"working folder {workdir}")
    try:
        code = _demo(args, workdir)
        if keep and (workdir / "dataset").is_dir():
            say(f"the Parquet data set is in {workdir / 'dataset'}; query it with:")
            for command in query_commands(workdir / "dataset"):
                say(f"  {command}")
        return code
    finally:
        if keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def query_commands(dataset: Path) -> list[str]:
    """The README's queries, on this data set."""
    return [f"tools/backend query {dataset} gaps",
            f"tools/backend query {dataset} last --signal can0.VCU_Status.Gear",
            f"tools/backend query {dataset} series --signal "
            f"can0.ESP_VehicleSpeed.VehicleSpeed --vehicle {VEHICLE}",
            f"tools/backend query {dataset} events --vehicle {VEHICLE}"]


def _demo(args: argparse.Namespace, workdir: Path) -> int:
    try:
        ensure_mosquitto()
    except BrokerUnavailable as exc:
        say(f"cannot start: {exc}")
        return 1
    say("making throwaway keys and certificates")
    pki = make_dev_pki(workdir / "pki")
    vehicle_tls, backend_tls = pki.client(VEHICLE), pki.client("backend")
    generate_key_pair(workdir / "vehicle.key")
    with MosquittoBroker(workdir / "broker", pki) as broker:
        say(f"Mosquitto listening on 127.0.0.1:{broker.port} (mutual TLS)")
        config = workdir / "agent.toml"
        config.write_text(dump_toml(demo_config(args, broker.port, vehicle_tls, workdir)),
                          encoding="utf-8")
        backend = _spawn([sys.executable, "-m", "fleet.backend", "--host", "127.0.0.1",
                          "--port", str(broker.port), "--ca-cert", str(backend_tls.ca_cert),
                          "--cert", str(backend_tls.cert), "--key", str(backend_tls.key),
                          "--keys", f"{VEHICLE}={workdir / 'vehicle.pub'}", "--idle", "5",
                          "--report", str(workdir / "report.json"), *_dataset_options(workdir)])
        echo_backend = _echo(backend.stdout, "backend  ")
        subscribed = threading.Event()
        _echo(backend.stderr, "backend  ", only=("error", "ERROR"),
              seen=("subscribed to", subscribed))
        # The agent starts once the broker acknowledged the backend's subscriptions.
        while not subscribed.wait(0.5):
            if backend.poll() is not None:
                say(f"the backend stopped before it subscribed (exit {backend.returncode})")
                return 1
        say(f"agent replays {REPO / 'dbc' / 'drive.log.gz'} at {args.speed:g}x, "
            f"{args.window:g} s windows, for {args.duration:g} s")
        agent = _spawn([sys.executable, "-m", "agent", "run", "--config", str(config),
                        "--duration", str(args.duration)])
        _echo(agent.stderr, "agent    ", only=("sealed", "running", "WARNING", "ERROR"))
        agent_code = agent.wait()
        backend_code = backend.wait(timeout=60)
        echo_backend.join(timeout=5)
    return _conclude(workdir / "report.json", agent_code, backend_code)


def _dataset_options(workdir: Path) -> list[str]:
    """The backend's Parquet data set in the working folder, when pyarrow is installed (the
    edge-agent-fleet[parquet] extra, which tools/_venv.sh installs)."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        say("no pyarrow: the backend writes no Parquet data set (pip install "
            "'./offboard[parquet]')")
        return []
    return ["--dataset", str(workdir / "dataset"), "--worker", "demo", "--flush", "10"]


def demo_config(args: argparse.Namespace, port: int, tls: Any, workdir: Path) -> dict[str, Any]:
    """The repository's documented config.toml, with the demo's few overrides."""
    with (REPO / "config.toml").open("rb") as handle:
        config = tomllib.load(handle)
    for source in config["sources"]:
        source["dbc"] = [str(REPO / path) for path in source["dbc"]]
        if source.get("path"):
            source["path"] = str(REPO / source["path"])
        source["speed"] = args.speed
    config["vehicle"]["id"] = VEHICLE
    config["batch"]["window"] = args.window
    config["keys"]["signing_key"] = str(workdir / "vehicle.key")
    config["uplink"].update(host="127.0.0.1", port=port, ca_cert=str(tls.ca_cert),
                            cert=str(tls.cert), key=str(tls.key))
    config["state"]["directory"] = str(workdir / "state")
    # The demo runs as the invoking user; no diagnostics group exists on a fresh machine.
    config.setdefault("control", {})["group"] = ""
    return config


def dump_toml(document: dict[str, Any]) -> str:
    """Enough TOML for a config: scalar keys, tables, arrays of tables, nested tables."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in document.items()
             if not isinstance(value, dict) and not _is_tables(value)]
    for key, value in document.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]", *_table_lines(value, key)]
        elif _is_tables(value):
            for table in value:
                lines += ["", f"[[{key}]]", *_table_lines(table, key)]
    return "\n".join(lines) + "\n"


def _table_lines(table: dict[str, Any], prefix: str) -> list[str]:
    lines = [f"{key} = {_toml_value(value)}" for key, value in table.items()
             if not _is_tables(value) and not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}.{key}]", *_table_lines(value, f"{prefix}.{key}")]
        elif _is_tables(value):
            for item in value:
                lines += ["", f"[[{prefix}.{key}]]", *_table_lines(item, f"{prefix}.{key}")]
    return lines


def _is_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _spawn(command: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def _echo(stream: IO[str] | None, prefix: str, only: tuple[str, ...] = (),
          seen: tuple[str, threading.Event] | None = None) -> threading.Thread:
    """Print the lines of `stream` that contain a word of `only`; set `seen`'s event at the
    first line containing its text."""
    def pump() -> None:
        assert stream is not None
        for line in stream:
            if seen is not None and seen[0] in line:
                seen[1].set()
            if not only or any(word in line for word in only):
                print(f"{prefix}| {line.rstrip()}", flush=True)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return thread


def _conclude(report_path: Path, agent_code: int, backend_code: int) -> int:
    if not report_path.exists():
        say(f"the backend wrote no report (exit {backend_code}); agent exit {agent_code}")
        return 1
    report = json.loads(report_path.read_text())
    say(f"done: {report['verified']} batches verified, {report['rejected']} rejected, "
        f"{report['duplicates']} duplicates, gaps: {report['gaps'] or 'none'}; "
        f"{report['samples']} samples in {size_per_sample(report['bytes'], report['samples'])}")
    healthy = agent_code == 0 and backend_code == 0 and report["verified"] > 0 \
        and not report["rejected"] and not report["gaps"]
    say("all batches arrived, verified and in order" if healthy else
        f"something went wrong (agent exit {agent_code}, backend exit {backend_code})")
    return 0 if healthy else 1


def say(text: str) -> None:
    print(f"demo     | {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
