"""Charts for the dashboard, drawn on the server as inline SVG.

Why SVG strings and not a charting library: the service runs where there may be no internet (no CDN) and
the project has no build step, and a handful of chart shapes (a bar, a sparkline, columns per day,
horizontal bars, percentile ranges) take a few lines each. Nothing runs in the browser, so the
dashboard's Content-Security-Policy forbids scripts altogether.

Every label may come from a report (a problem signature is text a client chose), so every piece of text
goes through :func:`esc`; numbers are formatted here, never pasted in. Each chart has ``role="img"``, an
``aria-label`` and ``<title>`` tooltips, so its numbers can be read without seeing it. Colours and fonts
come from classes in ``static/dashboard.css``, not from style attributes (the policy forbids those too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape


def esc(text: object) -> str:
    """Text (or a number) made safe for HTML and SVG content and attribute values."""
    return escape(str(text), quote=True)


def number(value: float) -> str:
    """A count or measurement for people: ``1,234``, ``12.5``, ``0.031``, ``2.4e+09``."""
    if not math.isfinite(value) or abs(value) >= 1e9:
        return f"{value:.3g}"
    if isinstance(value, int) or value.is_integer() or abs(value) >= 100:
        return f"{round(value):,}"
    return f"{value:.3g}" if abs(value) >= 0.001 else f"{value:.2g}"


def percent(share: float) -> str:
    """A share as people read it: ``62%``, ``0.4%``."""
    return f"{share * 100:.0f}%" if share >= 0.01 or share == 0 else f"{share * 100:.1g}%"


def _svg(css: str, width: float, height: float, label: str, body: str) -> str:
    return (
        f'<svg class="chart {css}" viewBox="0 0 {width:g} {height:g}" width="{width:g}" height="{height:g}" '
        f'role="img" aria-label="{esc(label)}"><title>{esc(label)}</title>{body}</svg>'
    )


def bar(value: float, maximum: float, label: str, *, width: int = 120, height: int = 12, css: str = "bar") -> str:
    """One horizontal bar, ``value`` out of ``maximum``: for a table cell."""
    filled = 0.0 if maximum <= 0 else max(1.0, width * min(value, maximum) / maximum)
    body = f'<rect class="track" width="{width}" height="{height}"/>'
    body += f'<rect class="fill" width="{filled:.1f}" height="{height}"/>'
    return _svg(css, width, height, label, body)


def sparkline(values: Sequence[int | None], label: str, *, width: int = 120, height: int = 24) -> str:
    """A line of one value per day; ``None`` (a day under k machines) breaks the line and is marked."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(1, len(values) - 1)
    pad = 2
    segments: list[list[str]] = [[]]
    marks = []
    for i, v in enumerate(values):
        x = i * step
        if v is None:
            segments.append([])
            marks.append(f'<rect class="hidden" x="{x - 1:.1f}" y="{height - 3}" width="2" height="3"/>')
            continue
        y = height - pad - (height - 2 * pad) * v / top
        segments[-1].append(f"{x:.1f},{y:.1f}")
    lines = "".join(f'<polyline points="{" ".join(s)}"/>' for s in segments if len(s) > 1)
    dots = "".join(
        f'<circle r="1.5" cx="{s[0].split(",")[0]}" cy="{s[0].split(",")[1]}"/>' for s in segments if len(s) == 1
    )
    return _svg("sparkline", width, height, label, lines + dots + "".join(marks))


def columns(
    points: Sequence[tuple[str, int | None]], label: str, unit: str, *, css: str = "columns", height: int = 140
) -> str:
    """Columns, one per day (``(day, value)``), with the largest value and the first and last day marked.

    ``None`` is a day whose value is not shown (under k machines): no column, and the tooltip says so.
    """
    width, left, bottom, top_pad = 720, 44, 18, 8
    top = max((v for _, v in points if v is not None), default=0) or 1
    slot = (width - left) / max(1, len(points))
    plot = height - bottom - top_pad
    body = [
        f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}"/>',
        f'<text class="tick" x="{left - 4}" y="{top_pad + 4}" text-anchor="end">{esc(number(top))}</text>',
        f'<text class="tick" x="{left - 4}" y="{height - bottom}" text-anchor="end">0</text>',
    ]
    for i, (day, value) in enumerate(points):
        x = left + i * slot
        tip = f"{day}: {number(value)} {unit}" if value is not None else f"{day}: fewer than k {unit}"
        h = 0.0 if value is None else max(1.0 if value else 0.0, plot * value / top)
        body.append(
            f'<rect class="col" x="{x + slot * 0.1:.1f}" y="{height - bottom - h:.1f}" width="{slot * 0.8:.1f}" '
            f'height="{h:.1f}" data-day="{esc(day)}" data-value="{"" if value is None else value}">'
            f"<title>{esc(tip)}</title></rect>"
        )
    if points:
        body.append(f'<text class="tick" x="{left}" y="{height - 4}">{esc(points[0][0])}</text>')
        body.append(f'<text class="tick" x="{width}" y="{height - 4}" text-anchor="end">{esc(points[-1][0])}</text>')
    return _svg(css, width, height, label, "".join(body))


def hbars(rows: Sequence[tuple[str, float, str, Mapping[str, object]]], label: str, *, css: str = "hbars") -> str:
    """Horizontal bars, labels on the left: ``(label, share from 0 to 1, text at the bar's end, data)`` per
    row, where ``data`` becomes the row's ``data-*`` attributes (the exact numbers behind the text)."""
    width, left, row_h, right = 560, 200, 20, 110
    height = max(1, len(rows)) * row_h
    body = []
    for i, (name, share, text, data) in enumerate(rows):
        y = i * row_h
        attributes = "".join(f' data-{esc(k)}="{esc(v)}"' for k, v in data.items())
        w = max(1.0 if share > 0 else 0.0, (width - left - right) * min(share, 1.0))
        shown = name if len(name) <= 30 else name[:29] + "…"
        body.append(
            f'<g class="row"{attributes}><title>{esc(f"{name}: {text}")}</title>'
            f'<text class="label" x="{left - 6}" y="{y + 14}" text-anchor="end">{esc(shown)}</text>'
            f'<rect class="track" x="{left}" y="{y + 4}" width="{width - left - right}" height="{row_h - 8}"/>'
            f'<rect class="fill" x="{left}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}"/>'
            f'<text class="value" x="{left + w + 6:.1f}" y="{y + 14}">{esc(text)}</text></g>'
        )
    return _svg(css, width, height, label, "".join(body))


def ranges(rows: Sequence[tuple[str, float, float, float]], label: str) -> str:
    """Percentiles per version on a log scale: a line from p50 to p99, marks at p50, p90 and p99.

    One row per version, in version order, so a regression shows as marks moving right.
    """
    width, left, right, row_h, axis_h = 560, 90, 40, 22, 18
    values = [v for _, *ps in rows for v in ps if v > 0]
    low, high = (min(values), max(values)) if values else (1.0, 10.0)
    lo, hi = math.floor(math.log10(low)), math.ceil(math.log10(high))
    hi = max(hi, lo + 1)

    def x(v: float) -> float:
        return left + (width - left - right) * (math.log10(max(v, 10.0**lo)) - lo) / (hi - lo)

    height = len(rows) * row_h + axis_h
    body = []
    for decade in range(lo, hi + 1):
        body.append(
            f'<line class="grid" x1="{x(10.0**decade):.1f}" y1="0" x2="{x(10.0**decade):.1f}" y2="{height - axis_h}"/>'
        )
        body.append(
            f'<text class="tick" x="{x(10.0**decade):.1f}" y="{height - 4}" text-anchor="middle">'
            f"{esc(number(10.0**decade))}</text>"
        )
    for i, (version, p50, p90, p99) in enumerate(rows):
        y = i * row_h + row_h / 2
        tip = f"{version}: p50 {number(p50)}, p90 {number(p90)}, p99 {number(p99)}"
        body.append(
            f'<g class="range"><title>{esc(tip)}</title>'
            f'<text class="label" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{esc(version)}</text>'
            f'<line class="spread" x1="{x(p50):.1f}" y1="{y:.1f}" x2="{x(p99):.1f}" y2="{y:.1f}"/>'
            f'<circle class="p50" r="4" cx="{x(p50):.1f}" cy="{y:.1f}"/>'
            f'<circle class="p90" r="3" cx="{x(p90):.1f}" cy="{y:.1f}"/>'
            f'<circle class="p99" r="3" cx="{x(p99):.1f}" cy="{y:.1f}"/></g>'
        )
    return _svg("ranges", width, height, label, "".join(body))
