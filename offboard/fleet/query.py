"""`tools/backend query DIR ...`: questions to the Parquet data set, answered by DuckDB.

- `gaps`: per vehicle and boot, the sequence coverage of the batches stored (from every worker
  that wrote to DIR): first and last seq, batches, duplicates (stored more than once) and the
  missing ranges between first and last.
- `last`: the newest value of every signal (or `--signal`) per vehicle.
- `series --signal S`: one signal's samples, per vehicle (or `--vehicle`), in time order.
- `events`: the events of a vehicle (or of all), in time order.

A batch or event stored more than once (by two workers) is counted in `gaps` as a duplicate
and answered once by the others (`last` takes the newest sample, whichever copy holds it).

Output: a table a person reads, or `--json` (one JSON array) for scripts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any

from agent.errors import AgentError


def parquet_source(root: Path, table: str) -> str:
    """read_parquet over one table's files, the partition folders as columns, both strings
    (a vehicle named `0042` stays `0042`)."""
    pattern = str(root / table / "**" / "*.parquet").replace("'", "''")
    return (f"read_parquet('{pattern}', hive_partitioning = true, "
            "hive_types = {'date': DATE, 'vehicle': VARCHAR})")


def gaps(connection: Any, root: Path) -> list[dict[str, Any]]:
    rows = connection.execute(f"""
        WITH stored AS (
            SELECT vehicle, boot, seq, count(*) AS copies
            FROM {parquet_source(root, 'batches')} GROUP BY vehicle, boot, seq),
        runs AS (
            SELECT vehicle, boot, seq, copies,
                   lead(seq) OVER (PARTITION BY vehicle, boot ORDER BY seq) AS next_seq
            FROM stored)
        SELECT vehicle, boot, min(seq), max(seq), count(*), sum(copies - 1)::BIGINT,
               list([seq + 1, next_seq - 1] ORDER BY seq) FILTER (WHERE next_seq > seq + 1)
        FROM runs GROUP BY vehicle, boot ORDER BY vehicle, boot""").fetchall()
    return [{"vehicle": vehicle, "boot": boot, "first": first, "last": last,
             "batches": count, "duplicates": duplicates,
             "missing": [list(r) for r in missing or []]}
            for vehicle, boot, first, last, count, duplicates, missing in rows]


def last_values(connection: Any, root: Path, signal: str | None) -> list[dict[str, Any]]:
    where = "WHERE signal = $signal" if signal else ""
    # arg_max of a struct: a null label at the newest time stays null (arg_max skips nulls).
    rows = connection.execute(f"""
        SELECT vehicle, signal, newest.t, newest.v, newest.l, newest.u FROM (
            SELECT vehicle, signal,
                   arg_max({{'t': time, 'v': coalesce(value, mean), 'l': label, 'u': unit}},
                           time) AS newest
            FROM {parquet_source(root, 'samples')} {where}
            GROUP BY vehicle, signal)
        ORDER BY vehicle, signal""", {"signal": signal} if signal else {}).fetchall()
    return [{"vehicle": vehicle, "signal": name, "time": time, "value": value, "label": label,
             "unit": unit} for vehicle, name, time, value, label, unit in rows]


def series(connection: Any, root: Path, signal: str,
           vehicle: str | None) -> list[dict[str, Any]]:
    parameters = {"signal": signal, **({"vehicle": vehicle} if vehicle else {})}
    # A batch stored twice (a redelivery that reached a second worker, a worker restarted
    # before its broker saw the acknowledgement) gives each of its samples once.
    rows = connection.execute(f"""
        SELECT vehicle, time, value, label, min, max, mean, count, unit FROM (
            SELECT DISTINCT ON (vehicle, boot, seq, time) *
            FROM {parquet_source(root, 'samples')}
            WHERE signal = $signal {"AND vehicle = $vehicle" if vehicle else ""})
        ORDER BY vehicle, time""", parameters).fetchall()
    names = ("vehicle", "time", "value", "label", "min", "max", "mean", "count", "unit")
    return [dict(zip(names, row, strict=True)) for row in rows]


def events(connection: Any, root: Path, vehicle: str | None) -> list[dict[str, Any]]:
    rows = connection.execute(f"""
        SELECT vehicle, time, event, data, positions, boot, seq FROM (
            SELECT DISTINCT ON (vehicle, boot, seq) *
            FROM {parquet_source(root, 'events')} {"WHERE vehicle = $vehicle" if vehicle else ""})
        ORDER BY vehicle, time, seq""", {"vehicle": vehicle} if vehicle else {}).fetchall()
    return [{"vehicle": v, "time": time, "event": kind, "data": json.loads(data),
             "positions": json.loads(positions), "boot": boot, "seq": seq}
            for v, time, kind, data, positions, boot, seq in rows]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tools/backend query",
                                     description="Query the backend's Parquet data set.")
    parser.add_argument("dataset", type=Path, help="the --dataset folder of the workers")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("gaps", help="sequence coverage per vehicle and boot")
    last = commands.add_parser("last", help="the newest value of each signal per vehicle")
    last.add_argument("--signal", help="only this signal")
    one = commands.add_parser("series", help="one signal's samples in time order")
    one.add_argument("--signal", required=True)
    one.add_argument("--vehicle", help="only this vehicle")
    happened = commands.add_parser("events", help="events in time order")
    happened.add_argument("--vehicle", help="only this vehicle")
    return parser


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        import duckdb
    except ImportError as exc:
        raise AgentError(f"query needs duckdb ({exc}): install "
                         "edge-agent-fleet[parquet]") from exc
    table = {"gaps": "batches", "last": "samples", "series": "samples",
             "events": "events"}[args.command]
    if not any((args.dataset / table).rglob("*.parquet")):
        return []
    connection = duckdb.connect()
    try:
        if args.command == "gaps":
            return gaps(connection, args.dataset)
        if args.command == "last":
            return last_values(connection, args.dataset, args.signal)
        if args.command == "series":
            return series(connection, args.dataset, args.signal, args.vehicle)
        return events(connection, args.dataset, args.vehicle)
    except duckdb.Error as exc:
        raise AgentError(f"query {args.command}: {exc}") from exc
    finally:
        connection.close()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = [{key: _plain(value) for key, value in row.items()} for row in run(args)]
    except AgentError as exc:
        print(f"backend query: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("(nothing stored)")
        return 0
    names = list(rows[0])
    cells = [[json.dumps(v) if isinstance(v, dict | list) else str(v) for v in row.values()]
             for row in rows]
    widths = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(names)]
    print("  ".join(name.ljust(width) for name, width in zip(names, widths, strict=True)))
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
