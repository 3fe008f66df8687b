"""The validation report's charts and figures read correctly: no clipped axis label, no invented
scale on an all-zero chart, shares as percentages (issue 28, item 5)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from market_pipeline.core.quality.report import _figure, bar_chart

SVG = "{http://www.w3.org/2000/svg}"
CHAR_WIDTH = 0.6  # em: a digit or colon of a sans-serif font is at most this wide


def _svg(chart: str) -> ET.Element:
    return ET.fromstring(re.search(r"<svg.*</svg>", chart, re.S)[0])


def _texts(svg: ET.Element) -> list[ET.Element]:
    return list(svg.iter(f"{SVG}text"))


def test_the_last_hour_label_fits_inside_the_chart():
    svg = _svg(bar_chart([1.0] * 24, "skew p99 per hour (UTC)", "ms"))
    width = float(svg.get("width"))
    (label,) = [t for t in _texts(svg) if t.text == "24:00"]
    half = len(label.text) * CHAR_WIDTH * float(label.get("font-size")) / 2
    assert label.get("text-anchor") == "middle"
    assert float(label.get("x")) + half <= width


def test_an_all_zero_chart_has_no_invented_scale():
    svg = _svg(bar_chart([0.0] * 24, "gaps detected per hour (UTC)", ""))
    assert "0 in every hour" in [t.text for t in _texts(svg)]
    y_axis = [t.text for t in _texts(svg) if t.get("text-anchor") == "end"]
    assert y_axis == ["0"]  # not "1 gaps"
    assert list(svg.iter(f"{SVG}rect")) == []
    assert "no values" in [t.text for t in _texts(_svg(bar_chart([None] * 24, "x", "ms")))]


def test_the_axis_gives_the_largest_value_with_its_unit():
    values = [0.0] * 23 + [3.0]
    svg = _svg(bar_chart(values, "gaps detected per hour (UTC)", ""))
    texts = [t.text for t in _texts(svg)]
    assert texts[0] == "gaps detected per hour (UTC)" and "3" in texts
    shares = _svg(bar_chart([12.5] + [None] * 23, "book rows out of sync per hour (UTC)", "%"))
    assert "12.5 %" in [t.text for t in _texts(shares)]
    ticks = [t.text for t in _texts(_svg(bar_chart([1.0] * 24, "max mid deviation per hour (UTC)", "ticks")))]
    assert "1 tick" in ticks and "1 ticks" not in ticks


def test_shares_print_as_percentages_and_counts_as_they_are():
    assert _figure("snapshot_exact_match_share", 0.91376) == "91.376 %"
    assert _figure("trades_at_or_inside_touch_share", 1) == "100 %"
    assert _figure("unsynced_share", 0.0) == "0 %"
    assert _figure("gaps_detected", 1) == "1"
    assert _figure("unsynced_share", None) == "–"


def test_figures_are_never_rounded():
    """A report shows what the warehouse holds: every float as the shortest text that reads back
    as the same float, a share's percentage as that text moved two places (no float product)."""
    assert _figure("p99_mid_dev_bps", 1234.56789012345) == "1234.56789012345"
    assert _figure("skew_p99_ms", 0.1 + 0.2) == "0.30000000000000004"
    assert float(_figure("skew_p99_ms", 1e-7)) == 1e-7
    assert _figure("snapshot_exact_match_share", 0.123456789123) == "12.3456789123 %"
    assert _figure("snapshot_exact_match_share", 0.29) == "29 %"  # 0.29 * 100 is 28.999999999999996
    chart = bar_chart([1234.56789012345] + [0.0] * 23, "skew p99 per hour (UTC)", "ms")
    assert "00:00-01:00 UTC: 1234.56789012345 ms</title>" in chart
