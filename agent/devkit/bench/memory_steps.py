"""RSS after each step of an agent's start, in this fresh interpreter (run as a script so that
nothing but the standard library is loaded before the first figure). Prints JSON pairs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc")


def _measure_steps() -> list[tuple[str, float]]:
    steps = [("python", rss_mb())]

    def step(name: str) -> None:
        steps.append((name, rss_mb()))

    import numpy  # noqa: F401
    step("numpy")
    import can  # noqa: F401
    step("python_can")
    import cantools  # noqa: F401
    step("cantools")
    import paho.mqtt.client  # noqa: F401
    step("paho")
    import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    step("cryptography")
    import cbor2  # noqa: F401
    import zstandard  # noqa: F401
    step("zstd_cbor")
    import agent.cli
    import agent.daemon  # noqa: F401
    step("agent_modules")
    from agent.dbc import load_dbc
    dbc = load_dbc([Path(sys.argv[1])])
    step("parsed_dbc")
    from agent.config import RingConfig
    from agent.ring import Ring
    ring = Ring.for_memory(RingConfig().memory_mb)
    step("ring_default")
    del dbc, ring
    return steps



if __name__ == "__main__":
    print(json.dumps(_measure_steps()))
