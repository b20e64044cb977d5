"""tools/bench --quick --json: runs against the real parts and reports every figure.

Speed is the bench's business, not the test's: this checks that each figure was measured
(a value, a same-run baseline, a verdict) and asserts nothing about how fast anything was.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.support import require_mosquitto

# About 40 s with a broker and an agent: `-m 'not slow'` leaves it out of a quick run.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIGURES = {"paced_ingest_cpu", "ingest_cpu_per_frame", "payload_bytes_per_sample", "seal_ms",
           "memory_rss_mb", "spool_drain_batches_per_s", "startup_s"}


def test_quick_bench_emits_every_figure_as_json(tmp_path: Path) -> None:
    require_mosquitto()
    results = tmp_path / "RESULTS.md"
    run = subprocess.run([str(REPO / "tools" / "bench"), "--quick", "--json",
                          "--results", str(results)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["errors"] == {}
    assert report["quick"] is True
    assert set(report["figures"]) == FIGURES
    for key, figure in report["figures"].items():
        assert figure["value"] > 0, key
        assert figure["baseline"] > 0, key
        assert isinstance(figure["met"], bool), key
        assert figure["target"], key
    assert {"cpu", "cores", "python", "os", "date"} <= set(report["machine"])
    # Sizes are not timings: the columnar batch must beat row formats on the same samples.
    payload = report["figures"]["payload_bytes_per_sample"]
    assert payload["value"] < payload["details"]["msgpack_zlib_bytes_per_sample"]
    assert payload["value"] < payload["baseline"]
    assert report["figures"]["ingest_cpu_per_frame"]["details"]["offered_paced"] > 0
    assert report["figures"]["paced_ingest_cpu"]["details"]["offered_frames_per_s"] == 16_400
    markdown = results.read_text()
    assert "| Figure |" in markdown
    for figure in report["figures"].values():
        assert figure["title"] in markdown
