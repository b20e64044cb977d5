"""The live monitor's screen as pure state: keys, scrolling, sorting, the header's counters."""

from __future__ import annotations

from rich.console import Console

from agent.cli.diag.live import View, _keys, counters, rows_per_page, screen


def rows(count: int) -> list[dict]:
    return [{"signal": f"can0.Msg.Signal_{index:03d}", "value": float(count - index),
             "raw": count - index, "unit": "km/h", "label": None, "age_s": index % 7 / 10,
             "mode": "last"} for index in range(count)]


def test_keys_filter_pause_sort_and_quit():
    view = View()
    assert view.press("f", 10) and view.typing == ""
    for key in "ESP_*x":
        view.press(key, 10)
    view.press("\x7f", 10)  # backspace
    assert view.typing == "ESP_*" and view.glob == "*"
    view.press("\r", 10)
    assert view.glob == "ESP_*" and view.typing is None and view.stale
    view.press("f", 10)
    view.press("Z", 10)
    view.press("\x1b", 10)  # Esc: the filter stays
    assert view.glob == "ESP_*" and view.typing is None
    assert view.press("p", 10) and view.paused
    assert view.press("p", 10) and not view.paused
    assert [view.sort for _ in range(3) if view.press("s", 10)] == ["age", "value", "name"]
    assert not view.press("q", 10)


def test_scrolling_stays_within_the_rows():
    view = View(rows=rows(25))
    view.press("pgdn", 10)
    view.press("pgdn", 10)
    view.press("pgdn", 10)
    assert view.offset == 15  # the last page is full, not one row
    view.press("up", 10)
    assert view.offset == 14
    view.press("pgup", 10)
    view.press("pgup", 10)
    assert view.offset == 0


def test_sorts_by_name_age_and_value():
    view = View(rows=rows(5))
    assert [r["signal"][-3:] for r in view.sorted_rows()] == ["000", "001", "002", "003", "004"]
    view.sort = "value"
    assert [r["value"] for r in view.sorted_rows()] == [1.0, 2.0, 3.0, 4.0, 5.0]
    view.sort = "age"
    ages = [r["age_s"] for r in view.sorted_rows()]
    assert ages == sorted(ages)


def test_escape_sequences_are_keys():
    assert _keys("\x1b[A\x1b[Bq\x1b[5~\x1b[6~") == ["up", "down", "q", "pgup", "pgdn"]


def test_header_counters_and_full_names_on_a_narrow_screen():
    status = {"sources": [
        {"frames": 1000, "ignored": 40, "error_frames": 1, "short_frames": 2,
         "decode_errors": 3, "overflow": 5, "frames_per_s": 250.0, "rejected.checksum": 4},
        {"frames": 10, "ignored": 0, "error_frames": 0, "short_frames": 0, "decode_errors": 0,
         "overflow": 0, "frames_per_s": 2.5}]}
    assert counters(status) == {"received": 1010, "ignored": 40, "errors": 10, "overflow": 5,
                                "rate": 252.5}
    long_name = "can0.VeryLongMessageNameForTesting.AndAnEvenLongerSignalNameThatDoesNotFit"
    view = View(rows=[{"signal": long_name, "value": 1.5, "raw": 3, "unit": "bar",
                       "label": None, "age_s": 0.2, "mode": "last"}],
                counters=counters(status), vehicle="demo", paused=True)
    out = Console(width=60, height=20, record=True, color_system=None)
    out.print(screen(view, 20, 60))
    text = out.export_text()
    assert "…" not in text and "..." not in text
    assert long_name in "".join(line.split(" ")[0] for line in text.splitlines())
    assert "received 1010" in text and "overflow 5" in text and "PAUSED" in text
    assert "1.5" in text and "bar" in text
    assert rows_per_page(20) == 14


def test_paging_with_folded_names_reaches_every_row_and_never_overflows():
    # Names too long for the column fold onto two or three lines, so a page holds fewer rows
    # than the screen has lines: paging must move by the rows shown, and reach the last one.
    width, height = 50, 16
    names = [f"can0.Message{index:02d}.{'Signal' * (1 + index % 3)}_{index:02d}"
             for index in range(23)]
    view = View(rows=[{"signal": name, "value": 1.0, "raw": 1, "unit": "V", "label": None,
                       "age_s": 0.1, "mode": "last"} for name in names])
    seen: list[str] = []
    while True:
        out = Console(width=width, height=height, record=True, color_system=None)
        out.print(screen(view, height, width))
        text = out.export_text()
        names_on_screen = "".join(line.split(" ")[0] for line in text.splitlines())
        page = names[view.offset:view.offset + view.shown]
        assert 1 <= view.shown < rows_per_page(height)  # folding costs lines
        assert all(name in names_on_screen for name in page)  # every row shown, whole
        assert f"signals {view.offset + 1}-{view.offset + view.shown} of 23" in text
        seen.extend(name for name in page if name not in seen)
        before = view.offset
        view.press("pgdn", rows_per_page(height))
        if view.offset == before:
            break
        assert view.offset <= before + view.shown  # no row skipped
    assert seen == names
    assert names[-1] in names_on_screen
    view.press("pgup", rows_per_page(height))
    assert view.offset < len(names) - 1
