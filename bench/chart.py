"""The bench's picture: bench/results.json as an SVG bar chart (bench/results.svg).

A few horizontal bar panels, each with its own scale: a bar per figure at its median, a
whisker from its min to its max, the value written next to it, and, where a figure has
one, a dashed mark at its target. An SVG is XML text, so this writes it directly rather
than pulling a plotting library into the dev tools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH = 820
LABEL_W = 250
BAR_AREA = 380
ROW_H = 24
BAR_H = 14
PANEL_GAP = 22
FONT = "font-family:DejaVu Sans,Helvetica,Arial,sans-serif"
BAR_FILL = "#4878a8"
RATIO_FILL = "#d08a3a"


@dataclass(frozen=True)
class Bar:
    """One figure: its median (``value``), optional min/max and an optional target."""

    label: str
    value: float
    low: float | None = None
    high: float | None = None
    target: float | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    bars: Sequence[Bar]
    fill: str = BAR_FILL


def _scale_max(panel: Panel) -> float:
    top = max(
        max(v for v in (bar.value, bar.high, bar.target) if v is not None) for bar in panel.bars
    )
    if top <= 0:
        return 1.0
    step = 10.0 ** math.floor(math.log10(top))
    return next(f * step for f in (1.0, 2.0, 2.5, 5.0, 10.0) if f * step >= top)


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render(panels: Sequence[Panel], title: str, subtitle: str = "") -> str:
    """The SVG document for ``panels`` (empty panels are left out)."""
    panels = [panel for panel in panels if panel.bars]
    out: list[str] = []
    y = 34 + (18 if subtitle else 0)
    out.append(f'<text x="12" y="22" style="{FONT};font-size:16px;font-weight:bold">')
    out.append(f"{escape(title)}</text>")
    if subtitle:
        out.append(f'<text x="12" y="40" style="{FONT};font-size:11px;fill:#555">')
        out.append(f"{escape(subtitle)}</text>")
    for panel in panels:
        y += PANEL_GAP
        out.append(f'<g class="panel" data-title={quoteattr(panel.title)}>')
        out.append(f'<text x="12" y="{y}" style="{FONT};font-size:13px;font-weight:bold">')
        out.append(f"{escape(panel.title)} ({escape(panel.unit)})</text>")
        y += 8
        top = _scale_max(panel)
        x0 = LABEL_W

        def x_of(value: float, top: float = top, x0: int = x0) -> float:
            return round(x0 + BAR_AREA * max(value, 0.0) / top, 1)

        height = ROW_H * len(panel.bars)
        for tick in range(5):
            tx = x_of(top * tick / 4)
            out.append(
                f'<line x1="{tx}" y1="{y}" x2="{tx}" y2="{y + height}" '
                'stroke="#ddd" stroke-width="1"/>'
            )
            out.append(
                f'<text x="{tx}" y="{y + height + 11}" text-anchor="middle" '
                f'style="{FONT};font-size:9px;fill:#777">{_number(top * tick / 4)}</text>'
            )
        for row, bar in enumerate(panel.bars):
            top_y = y + row * ROW_H + (ROW_H - BAR_H) / 2
            mid = top_y + BAR_H / 2
            out.append(
                f'<g class="bar" data-label={quoteattr(bar.label)} data-value="{bar.value}">'
            )
            out.append(
                f'<text x="{x0 - 6}" y="{mid + 4}" text-anchor="end" '
                f'style="{FONT};font-size:11px">{escape(bar.label)}</text>'
            )
            out.append(
                f'<rect x="{x0}" y="{top_y}" width="{x_of(bar.value) - x0}" height="{BAR_H}" '
                f'fill="{panel.fill}"/>'
            )
            end = x_of(bar.value)
            if bar.low is not None and bar.high is not None:
                lo, hi = x_of(bar.low), x_of(bar.high)
                out.append(
                    f'<path class="whisker" d="M{lo},{mid} H{hi} M{lo},{mid - 4} V{mid + 4} '
                    f'M{hi},{mid - 4} V{mid + 4}" stroke="#222" stroke-width="1.2" fill="none"/>'
                )
                end = max(end, hi)
            if bar.target is not None:
                tx = x_of(bar.target)
                out.append(
                    f'<line class="target" x1="{tx}" y1="{top_y - 3}" x2="{tx}" '
                    f'y2="{top_y + BAR_H + 3}" stroke="#c0392b" stroke-width="2" '
                    'stroke-dasharray="3,2"/>'
                )
            text = _number(bar.value)
            if bar.low is not None and bar.high is not None:
                text += f" ({_number(bar.low)}-{_number(bar.high)})"
            if bar.target is not None:
                text += f" target {_number(bar.target)}"
            out.append(
                f'<text class="value" x="{end + 5}" y="{mid + 4}" '
                f'style="{FONT};font-size:10px">{escape(text)}</text>'
            )
            out.append("</g>")
        y += height + 14
        out.append("</g>")
    height = y + 10
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img">'
        f'<title>{escape(title)}</title><rect width="100%" height="100%" fill="#fff"/>'
    )
    return "\n".join([head, *out, "</svg>"]) + "\n"


def _bar(figures: Mapping[str, Any], key: str, label: str) -> list[Bar]:
    figure = figures.get(key)
    if not isinstance(figure, Mapping):
        return []
    return [Bar(label, figure["median"], figure.get("min"), figure.get("max"))]


# (results.json key, label, target) of the ratio panel; the targets are issue 24's and
# docs/performance.md's.
RATIOS = [
    ("cold_vs_floor", "cold run / raw QEMU floor", 1.3),
    ("warm_vs_cold", "warm run / cold run", 0.35),
    ("seed64_vs_floor", "seed 64 MB tree / floor", 2.0),
    ("copyin64_vs_host", "copy 64 MB tree in / host cp -a", None),
    ("git_commit_guest_vs_host", "git commit: guest / host", None),
    ("plan_vs_import_floor", "pyro plan / import floor", 1.3),
    ("concurrent_throughput_ratio", "8 at once: throughput ratio", None),
]


def panels_of(results: Mapping[str, Any]) -> list[Panel]:
    """The chart's panels from a bench/results.json document (missing figures left out)."""
    start = [
        *_bar(results, "floor_s", "raw QEMU boot (floor)"),
        *_bar(results, "cold_run_s", "pyro run --cold"),
        *_bar(results, "warm_run_s", "pyro run (restored)"),
        *_bar(results, "sdk_warm_run_s", "SDK run (restored)"),
        *_bar(results, "pool_run_s", "SDK run (warm pool)"),
    ]
    concurrency = [
        *_bar(results, "serial8_s", "8 runs one after another"),
        *_bar(results, "concurrent8_s", "8 runs at once"),
        *_bar(results, "concurrent8_no_slots_s", "8 at once, no start slots"),
        *_bar(results, "concurrent8_run_mean_s", "each of 8 at once (mean)"),
    ]
    cli = [
        *_bar(results, "import_floor_s", "import floor"),
        *_bar(results, "help_s", "pyro --help"),
        *_bar(results, "validate_s", "pyro validate"),
        *_bar(results, "plan_s", "pyro plan"),
    ]
    work = [
        *_bar(results, "seed64_s", "seed 64 MB tree, first exec"),
        *_bar(results, "copyin64_s", "copy 64 MB tree in"),
        *_bar(results, "host_cp64_s", "host cp -a of the tree"),
        *_bar(results, "git_commit_guest_s", "git commit in the guest"),
        *_bar(results, "git_commit_host_s", "git commit on the host"),
    ]
    ratios = [
        Bar(label, float(results[key]), target=target)
        for key, label, target in RATIOS
        if isinstance(results.get(key), int | float)
    ]
    return [
        Panel("Start latency", "s", start),
        Panel("Eight runs", "s", concurrency),
        Panel("CLI start-up", "s", cli),
        Panel("What users do", "s", work),
        Panel("Ratios within the run", "x", ratios, RATIO_FILL),
    ]


def render_results(results: Mapping[str, Any]) -> str:
    host = results.get("host", {})
    subtitle = (
        f"{results.get('backend', '?')}, {host.get('cpus', '?')} CPUs, "
        f"{results.get('finished', '')}; bar = median, whisker = min-max"
    )
    return render(panels_of(results), "make bench", subtitle)
