"""tools/bench: measure the seven performance figures, print them, write bench/RESULTS.md.

Every target is judged against a baseline measured in the same run (these machines are
shared and noisy), and the absolute figure is reported beside it. The bench exits non-zero
only when a figure cannot be measured; a missed target is a finding, not a failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from devkit.bench import (
    drain,
    fleet,
    fleet_worker,
    ingest,
    memory,
    modes,
    paced,
    payload,
    seal,
    startup,
    vcan_anchor,
)
from devkit.bench.common import REPO, Figure
from devkit.bench.startup import unit_environment

FIGURES: dict[str, Callable[[bool], Figure]] = {
    "paced": paced.run,  # the headline: frames offered at the real rate (#26)
    "ingest": ingest.run,
    "payload": payload.run,
    "seal": seal.run,
    "memory": memory.run,
    "drain": drain.run,
    "startup": startup.run,
}
# Measured only when asked for (`--only fleet`: a few minutes with a broker and 7 workers;
# `--only modes`: the whole bundled drive under each sampling profile).
OPTIONAL_FIGURES: dict[str, Callable[[bool], Figure]] = {
    "fleet": fleet.run,
    "fleet-worker": fleet_worker.run,  # one worker's CPU per batch, in process (#27)
    "modes": modes.run,  # bytes of the change and bounded modes against last (#23)
}
DEFAULT_RESULTS = REPO / "bench" / "RESULTS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in under a minute: fewer frames, runs and soak time "
                             "(figures are rougher; RESULTS.md is not written)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--only", action="append",
                        choices=sorted({**FIGURES, **OPTIONAL_FIGURES}),
                        help="measure only this figure (repeatable); `fleet` (the backend's "
                             "scale-out over 1, 2 and 4 workers) and `modes` (bytes of the "
                             "change and bounded sampling modes) run only when named")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"where to write the Markdown results (default: {DEFAULT_RESULTS} "
                             f"for a full run of every figure, nowhere for --quick/--only)")
    parser.add_argument("--vcan-anchor", action="store_true",
                        help="instead: the agent against candump on real SocketCAN, in one "
                             "vcan VM run (~10 min; offboard/devkit/bench/vcan_anchor.py)")
    args = parser.parse_args(argv)
    if args.vcan_anchor:
        return vcan_anchor.main([])
    if argv is None and (missing := {name: value for name, value in unit_environment().items()
                                     if name not in os.environ}):
        # The figures measured in this process (seal, ingest, paced) run as the daemon runs:
        # glibc reads the unit's malloc settings only as a process starts, so start again.
        os.execve(sys.executable, [sys.executable, "-m", "devkit.bench", *sys.argv[1:]],
                  {**os.environ, **missing})
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    machine = machine_info()
    figures, errors = [], {}
    for name in args.only or FIGURES:
        if not args.json:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
        try:
            figures.append({**FIGURES, **OPTIONAL_FIGURES}[name](args.quick))
        except Exception as exc:  # a figure that cannot run is reported, the rest still run
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
    report = {"machine": machine, "quick": args.quick,
              "seconds": round(time.monotonic() - started, 1),
              "figures": {f.key: f.as_json() for f in figures}, "errors": errors}
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(table(figures, errors))
    results = args.results
    if results is None and not args.quick and not args.only:
        results = DEFAULT_RESULTS
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(markdown(report, figures) + _kept_sections(results),
                           encoding="utf-8")
        if not args.json:
            print(f"wrote {results}", file=sys.stderr)
    return 1 if errors else 0


def machine_info() -> dict[str, object]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    except OSError:
        pass
    import os

    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "os": os_name, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": commit}


def _verdict(figure: Figure) -> str:
    return "—" if figure.met is None else ("met" if figure.met else "MISSED")


def table(figures: list[Figure], errors: dict[str, str]) -> str:
    lines = []
    for f in figures:
        baseline = f"{f.baseline:g} ({f.baseline_name})" if f.baseline is not None else "—"
        ratio = f"{f.ratio:g}x" if f.ratio is not None else "—"
        lines.append(f"{f.title}\n  agent: {f.value:g} {f.unit}   baseline: {baseline}\n"
                     f"  ratio: {ratio}   target: {f.target}: {_verdict(f)}   "
                     f"(median of {f.runs})")
        for key, value in f.details.items():
            lines.append(f"    {key}: {value}")
    for name, error in errors.items():
        lines.append(f"{name}: COULD NOT RUN: {error}")
    return "\n".join(lines)


# Below this line RESULTS.md holds the figures of the benchmarks a full run leaves out (fleet,
# modes, the vcan anchor, the long soak): a full run rewrites what is above it only.
KEPT_MARKER = "<!-- tools/bench rewrites what is above this line; the sections below are kept -->"


def _kept_sections(results: Path) -> str:
    try:
        text = results.read_text(encoding="utf-8")
    except FileNotFoundError:
        return "\n" + KEPT_MARKER + "\n"
    _, marker, kept = text.partition(KEPT_MARKER)
    return "\n" + KEPT_MARKER + (kept if marker else "\n")


def markdown(report: dict[str, object], figures: list[Figure]) -> str:
    machine = report["machine"]
    assert isinstance(machine, dict)
    lines = [
        "# Benchmark results",
        "",
        "Written by `tools/bench` (method: [docs/performance.md](../docs/performance.md)). "
        "Every target is a ratio against a baseline measured in the same run, on the same "
        "noisy machine, with the absolute figure beside it.",
        "",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores (shared with other jobs)",
        f"- Python {machine['python']}, {machine['os']}",
        f"- Date: {machine['date']}, commit {machine['commit']}, "
        f"{'quick' if report['quick'] else 'full'} run, {report['seconds']} s",
        "",
        "| Figure | Agent | Baseline (same run) | Ratio | Target | Verdict | Runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        baseline = f"{f.baseline:g} {f.unit} ({f.baseline_name})" if f.baseline is not None \
            else "—"
        ratio = f"{f.ratio:g}x" if f.ratio is not None else "—"
        lines.append(f"| {f.title} | **{f.value:g} {f.unit}** | {baseline} | {ratio} | "
                     f"{f.target} | {_verdict(f)} | median of {f.runs} |")
    lines += ["", "## Details", ""]
    for f in figures:
        lines.append(f"### {f.title}")
        lines.append("")
        lines += [f"- {key}: {value}" for key, value in f.details.items()]
        lines.append("")
    errors = report.get("errors") or {}
    assert isinstance(errors, dict)
    for name, error in errors.items():
        lines.append(f"- {name}: could not run: {error}")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
