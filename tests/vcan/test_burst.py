"""A full-load burst from cangen at the classic CAN ceiling: every frame taken, or counted."""

from __future__ import annotations

import subprocess

from agent.runtime import status
from tests.helpers.support import require_tool
from tests.vcan.conftest import running_agent, wait_for, write_config
from tests.vcan.kinds_dbc import kinds_source, write_kinds_dbc

FRAMES = 20_000
# 500 kbit/s carries ~4,100 frames/s: one frame every 0.25 ms (docs: ENVIRONMENT.md).
GAP_MS = "0.25"


def test_a_burst_at_the_bus_ceiling_is_taken_without_loss(tmp_path):
    cangen = require_tool("cangen")
    config = write_config(tmp_path, kinds_source(write_kinds_dbc(tmp_path)))
    with running_agent(config) as agent:
        health = agent.stores["can0"].health
        # Planned Engine frames (0x100) with a counter in the payload, then 0x7AB (no DBC).
        subprocess.run([cangen, "vcan0", "-g", GAP_MS, "-n", str(FRAMES), "-I", "100",
                        "-L", "8", "-D", "i"], check=True, timeout=600)
        subprocess.run([cangen, "vcan0", "-g", GAP_MS, "-n", "2000", "-I", "7AB", "-L", "8",
                        "-D", "i"], check=True, timeout=600)
        wait_for(lambda: health.frames >= FRAMES, f"{FRAMES} frames", timeout=120,
                 state=lambda: health)
        assert health.frames == FRAMES
        assert health.ignored == health.error_frames == health.overflow == 0
        # cangen's payload counts frames from 0 (little-endian): Speed is its low 16 bits.
        (signal, value, _), = [v for v in agent.stores["can0"].current_values()
                               if v[0].signal == "Speed"]
        assert value == (FRAMES - 1) % 2**16


def test_frames_the_kernel_drops_while_the_agent_stalls_are_counted(tmp_path):
    """A stalled pipeline backs up into the socket; what its queue cannot hold is counted as
    `overflow` (the kernel's own count), so every frame sent is either read or counted."""
    cangen = require_tool("cangen")
    frames = 5_000
    # 64 kB: ~100 frames fit, so the stall below overflows whatever the host's speed.
    config = write_config(tmp_path, kinds_source(write_kinds_dbc(tmp_path),
                                                 receive_buffer_kb=64))
    with running_agent(config) as agent:
        health = agent.stores["can0"].health
        with agent.lock:  # the pipeline is busy: the source queues a few batches, then waits
            subprocess.run([cangen, "vcan0", "-g", GAP_MS, "-n", str(frames), "-I", "100",
                            "-L", "8", "-D", "i"], check=True, timeout=600)
        wait_for(lambda: health.frames + health.overflow == frames,
                 "every frame read or counted as overflow", timeout=120, state=lambda: health)
        assert health.overflow > frames // 2
        assert health.frames > 0
        warnings = status.status(agent.snapshot())["warnings"]
        assert any(f"{health.overflow} frames lost in the kernel" in warning
                   for warning in warnings), warnings
