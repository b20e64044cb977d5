"""The vehicle wheel holds the vehicle package and nothing that runs off the vehicle.

`pip install .` (and tools/install, which runs it) installs exactly this wheel: the fleet
backend, config signing, the dev kit's PKI and broker, the demo and the benchmark belong to
the other distribution (offboard/pyproject.toml) and must not reach a car. The wheel is built
from a copy of the checkout, offline (setuptools from the test extra, no build isolation).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NOT_COPIED = (".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache",
              ".ruff_cache", ".hypothesis", "state", "demo-run")
OFF_VEHICLE = ("fleet/", "devkit/", "offboard/", "tests/", "tools/")


def build_wheel(source: Path, out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--wheel-dir", str(out), str(source)],
                   check=True, capture_output=True)
    (wheel,) = out.glob("edge_agent-*.whl")
    return wheel


def test_the_vehicle_wheel_holds_the_agent_package_and_nothing_off_vehicle(tmp_path):
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO, checkout, ignore=shutil.ignore_patterns(*NOT_COPIED))
    names = zipfile.ZipFile(build_wheel(checkout, tmp_path / "wheel")).namelist()

    modules = sorted(name for name in names if name.endswith(".py"))
    assert modules, names
    assert all(name.startswith("agent/") for name in modules), modules
    assert not [name for name in names if name.startswith(OFF_VEHICLE)]
    # Every module of the vehicle package is in it (a package without __init__.py would be
    # silently left out by setuptools' find).
    expected = sorted(str(path.relative_to(REPO)) for path in (REPO / "agent").rglob("*.py"))
    assert modules == expected
    assert {name.split("/", 1)[0] for name in names if ".dist-info/" not in name} == {"agent"}
