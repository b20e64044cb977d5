# Sourced by the tools: make sure .venv exists and has the project installed (the vehicle
# package edge-agent and the off-vehicle edge-agent-fleet from offboard/), then set $PY.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
# Production DBCs for tests/unit/decoding/test_real_dbcs.py: only opendbc's .dbc files are used, not its
# Python API, so none of its dependencies. Its own stamp, so that a venv made before it gets it.
OPENDBC="opendbc==0.3.1"
OPENDBC_STAMP="$VENV/.installed-$OPENDBC"

if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    rm -rf "$VENV"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "tools: python3-venv is missing; installing it" >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv >&2; }
      python3 -m venv "$VENV"
    else
      echo "tools: cannot create a virtualenv: install python3-venv (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
if [ ! -f "$STAMP" ] || [ "$ROOT/pyproject.toml" -nt "$STAMP" ] \
    || [ "$ROOT/offboard/pyproject.toml" -nt "$STAMP" ] || [ ! -f "$OPENDBC_STAMP" ]; then
  echo "tools: installing the project into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  # Both distributions in one call, so that edge-agent-fleet's dependency on edge-agent is
  # met by this checkout: the vehicle package and the off-vehicle one (fleet, devkit), with
  # its parquet extra (pyarrow, duckdb) for the backend's data set and its tests.
  "$VENV/bin/python" -m pip install -q -e "$ROOT[test]" -e "$ROOT/offboard[parquet]" >&2
  "$VENV/bin/python" -m pip install -q --no-deps "$OPENDBC" >&2
  touch "$STAMP" "$OPENDBC_STAMP"
fi
PY="$VENV/bin/python"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
