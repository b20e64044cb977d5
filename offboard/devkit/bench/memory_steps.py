"""RSS after each step of an agent's start, in this fresh interpreter (run as a script so that
nothing but the standard library is loaded before the first figure). Prints JSON pairs.

The libraries, the parsed DBC and the ring come before the agent's own modules, so the step
before `agent_modules` is the floor any agent built on these parts starts from. With
`--without-numpy` numpy is left out: the floor of an agent whose seal does not use it.
"""

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


def _measure_steps(dbc_path: Path, with_numpy: bool) -> list[tuple[str, float]]:
    steps = [("python", rss_mb())]

    def step(name: str) -> None:
        steps.append((name, rss_mb()))

    if with_numpy:
        import numpy  # noqa: F401
        step("numpy")
    import can  # noqa: F401
    step("python_can")
    import cantools
    step("cantools")
    import paho.mqtt.client  # noqa: F401
    step("paho")
    import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
    step("cryptography")
    import cbor2  # noqa: F401
    import zstandard  # noqa: F401
    step("zstd_cbor")
    database = cantools.database.load_file(str(dbc_path))
    step("parsed_dbc")
    ring = _default_ring()
    step("ring_default")
    if with_numpy:
        import agent.cli
        import agent.runtime.daemon  # noqa: F401
        step("agent_modules")
    del database, ring
    return steps


def _default_ring() -> object:
    """The ring's columns at the default size, as `agent.sampling.ring.Ring` allocates them (that
    module imports numpy, so it is not imported here)."""
    from array import array

    from agent.config.schema import RingConfig
    records = int(RingConfig().memory_mb * 1024 * 1024 // (8 + 2 + 1 + 8))
    return [array(code, bytes(size * records)) for code, size in
            (("q", 8), ("H", 2), ("B", 1), ("q", 8))]


if __name__ == "__main__":
    print(json.dumps(_measure_steps(Path(sys.argv[1]), "--without-numpy" not in sys.argv)))
