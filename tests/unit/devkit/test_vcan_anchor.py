"""The vcan anchor's verdict from the rungs of a run (the run: `tools/bench --vcan-anchor`)."""

from devkit.bench.vcan_anchor import verdict


def rung(rate: int, received: int, cpu_s: float, kept_up: bool = True) -> dict:
    return {"rate_per_bus": rate, "received": received, "cpu_s": cpu_s, "kept_up": kept_up,
            "offered_frames_per_s": 4 * rate, "cpu_us_per_frame": cpu_s / received * 1e6}


def test_the_verdict_compares_at_the_highest_rate_both_keep_up_with() -> None:
    result = {
        "candump": {"shared": rung(10, 320, 0.32),
                    "ladder": [rung(10, 160, 0.16), rung(50, 800, 0.8), rung(100, 1600, 1.6),
                               rung(250, 4000, 4.0), rung(500, 7000, 6.0, kept_up=False)]},
        "agent": {"shared": rung(10, 320, 3.2),
                  "ladder": [rung(10, 160, 2.0), rung(50, 800, 2.2), rung(100, 1600, 2.4),
                             rung(250, 1000, 3.0, kept_up=False)]},
    }
    found = verdict(result)
    assert found["a_shared_rate"] == {"rate_per_bus": 10, "ratio": 10.0}
    assert found["a_highest_shared_rate"]["rate_per_bus"] == 100
    assert found["a_highest_shared_rate"]["ratio"] == 1.5
    assert (found["b_agent_frames_per_s"], found["b_candump_frames_per_s"]) == (400, 1000)
    assert found["b_ratio"] == 0.4
    assert found["agent_us_per_added_frame"] == 250.0  # (2.4 - 2.2) s / 800 frames
    assert found["candump_us_per_added_frame"] == 1000.0
