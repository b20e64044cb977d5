"""A full `tools/bench` run rewrites the head of bench/RESULTS.md and keeps the sections that
the benchmarks it leaves out (fleet, modes, the vcan anchor) wrote below the marker."""

from __future__ import annotations

from devkit.bench.__main__ import KEPT_MARKER, _kept_sections, markdown

REPORT = {"machine": {"cpu": "test", "cores": 2, "python": "3.11", "os": "Linux",
                      "date": "2026-12-03", "commit": "abc"}, "quick": False, "seconds": 1.0}


def test_a_rewrite_keeps_what_is_below_the_marker(tmp_path):
    results = tmp_path / "RESULTS.md"
    results.write_text("# old head\n\nold figures\n\n" + KEPT_MARKER
                       + "\n\n## Fleet scale-out\n\n4 workers\n", encoding="utf-8")
    rewritten = markdown(REPORT, []) + _kept_sections(results)
    assert "old figures" not in rewritten and "commit abc" in rewritten
    assert rewritten.endswith(KEPT_MARKER + "\n\n## Fleet scale-out\n\n4 workers\n")
    results.write_text(rewritten, encoding="utf-8")
    again = markdown(REPORT, []) + _kept_sections(results)
    assert again == rewritten  # stable: the marker is not repeated


def test_a_first_run_writes_the_marker(tmp_path):
    kept = _kept_sections(tmp_path / "RESULTS.md")
    assert kept.strip() == KEPT_MARKER
