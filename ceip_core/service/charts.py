"""Charts for the dashboard, drawn on the server as inline SVG.

Why SVG strings and not a charting library: the service runs where there may be no internet (no CDN) and
the project has no build step, and a handful of chart shapes (a bar, a sparkline, columns per day,
horizontal bars, percentile ranges) take a few lines each. Nothing runs in the browser, so the
dashboard's Content-Security-Policy forbids scripts altogether.

Every label may come from a report (a problem signature is text a client chose), so no markup is built
from plain strings: each piece is a :class:`markupsafe.Markup` template whose ``format`` escapes every
argument, and a chart is ``Markup`` the page templates (``templates/``) insert as it is. Numbers are
formatted here, never pasted in. Each chart has ``role="img"``, an
``aria-label`` and ``<title>`` tooltips, so its numbers can be read without seeing it. Colours and fonts
come from classes in ``static/dashboard.css``, not from style attributes (the policy forbids those too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from markupsafe import Markup

M = Markup


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


def _svg(css: str, width: float, height: float, label: str, body: Markup) -> Markup:
    return M(
        '<svg class="chart {css}" viewBox="0 0 {w:g} {h:g}" width="{w:g}" height="{h:g}" role="img" '
        'aria-label="{label}"><title>{label}</title>{body}</svg>'
    ).format(css=css, w=width, h=height, label=label, body=body)


def _join(parts: Sequence[Markup]) -> Markup:
    return M("").join(parts)


def bar(value: float, maximum: float, label: str, *, width: int = 120, height: int = 12, css: str = "bar") -> Markup:
    """One horizontal bar, ``value`` out of ``maximum``: for a table cell."""
    filled = 0.0 if maximum <= 0 else max(1.0, width * min(value, maximum) / maximum)
    body = M('<rect class="track" width="{w}" height="{h}"/><rect class="fill" width="{f:.1f}" height="{h}"/>').format(
        w=width, h=height, f=filled
    )
    return _svg(css, width, height, label, body)


def sparkline(values: Sequence[int | None], label: str, *, width: int = 120, height: int = 24) -> Markup:
    """A line of one value per day; ``None`` (a day under k machines) breaks the line and is marked."""
    top = max((v for v in values if v is not None), default=0) or 1
    step = width / max(1, len(values) - 1)
    pad = 2
    segments: list[list[tuple[float, float]]] = [[]]
    marks = []
    for i, v in enumerate(values):
        x = i * step
        if v is None:
            segments.append([])
            marks.append(M('<rect class="hidden" x="{:.1f}" y="{}" width="2" height="3"/>').format(x - 1, height - 3))
            continue
        segments[-1].append((x, height - pad - (height - 2 * pad) * v / top))
    lines = [
        M('<polyline points="{}"/>').format(" ".join(f"{x:.1f},{y:.1f}" for x, y in s)) for s in segments if len(s) > 1
    ]
    dots = [M('<circle r="1.5" cx="{:.1f}" cy="{:.1f}"/>').format(*s[0]) for s in segments if len(s) == 1]
    return _svg("sparkline", width, height, label, _join(lines + dots + marks))


def columns(
    points: Sequence[tuple[str, int | None]], label: str, unit: str, *, css: str = "columns", height: int = 140
) -> Markup:
    """Columns, one per day (``(day, value)``), with the largest value and the first and last day marked.

    ``None`` is a day whose value is not shown (under k machines): no column, and the tooltip says so.
    """
    width, left, bottom, top_pad = 720, 44, 18, 8
    top = max((v for _, v in points if v is not None), default=0) or 1
    slot = (width - left) / max(1, len(points))
    plot = height - bottom - top_pad
    base = height - bottom
    body = [
        M('<line class="axis" x1="{l}" y1="{b}" x2="{w}" y2="{b}"/>').format(l=left, b=base, w=width),
        M('<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>').format(left - 4, top_pad + 4, number(top)),
        M('<text class="tick" x="{}" y="{}" text-anchor="end">0</text>').format(left - 4, base),
    ]
    for i, (day, value) in enumerate(points):
        x = left + i * slot
        tip = f"{day}: {number(value)} {unit}" if value is not None else f"{day}: fewer than k {unit}"
        h = 0.0 if value is None else max(1.0 if value else 0.0, plot * value / top)
        body.append(
            M(
                '<rect class="col" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" data-day="{day}" '
                'data-value="{value}"><title>{tip}</title></rect>'
            ).format(
                x=x + slot * 0.1, y=base - h, w=slot * 0.8, h=h, day=day, value="" if value is None else value, tip=tip
            )
        )
    if points:
        body.append(M('<text class="tick" x="{}" y="{}">{}</text>').format(left, height - 4, points[0][0]))
        body.append(
            M('<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>').format(width, height - 4, points[-1][0])
        )
    return _svg(css, width, height, label, _join(body))


def hbars(
    rows: Sequence[tuple[str, float | None, str, Mapping[str, object]]],
    label: str,
    *,
    css: str = "hbars",
    row: str = "row",
) -> Markup:
    """Horizontal bars, labels on the left: ``(label, share from 0 to 1, text at the bar's end, data)`` per
    row, where ``data`` becomes the row's ``data-*`` attributes (the exact numbers behind the text), and
    ``row`` its class. A share of None (a number k-anonymity hides) draws no bar, only the text."""
    width, left, row_h, right = 560, 200, 20, 110
    height = max(1, len(rows)) * row_h
    track = width - left - right
    body = []
    for i, (name, share, text, data) in enumerate(rows):
        y = i * row_h
        attributes = _join([M(' data-{}="{}"').format(k, v) for k, v in data.items()])
        w = 0.0 if share is None else max(1.0 if share > 0 else 0.0, track * min(share, 1.0))
        shown = name if len(name) <= 30 else name[:29] + "…"
        body.append(
            M(
                '<g class="{row}"{attributes}><title>{tip}</title>'
                '<text class="label" x="{lx}" y="{ty}" text-anchor="end">{shown}</text>'
                '<rect class="track" x="{left}" y="{ry}" width="{track}" height="{rh}"/>'
                '<rect class="fill" x="{left}" y="{ry}" width="{w:.1f}" height="{rh}"/>'
                '<text class="value" x="{vx:.1f}" y="{ty}">{text}</text></g>'
            ).format(
                row=row,
                attributes=attributes,
                tip=f"{name}: {text}",
                lx=left - 6,
                ty=y + 14,
                shown=shown,
                left=left,
                ry=y + 4,
                track=track,
                rh=row_h - 8,
                w=w,
                vx=left + w + 6,
                text=text,
            )
        )
    return _svg(css, width, height, label, _join(body))


def ranges(rows: Sequence[tuple[str, float, float, float]], label: str) -> Markup:
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
        at = x(10.0**decade)
        body.append(M('<line class="grid" x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{y}"/>').format(x=at, y=height - axis_h))
        body.append(
            M('<text class="tick" x="{:.1f}" y="{}" text-anchor="middle">{}</text>').format(
                at, height - 4, number(10.0**decade)
            )
        )
    for i, (version, p50, p90, p99) in enumerate(rows):
        y = i * row_h + row_h / 2
        tip = f"{version}: p50 {number(p50)}, p90 {number(p90)}, p99 {number(p99)}"
        body.append(
            M(
                '<g class="range"><title>{tip}</title>'
                '<text class="label" x="{lx}" y="{ty:.1f}" text-anchor="end">{version}</text>'
                '<line class="spread" x1="{a:.1f}" y1="{y:.1f}" x2="{c:.1f}" y2="{y:.1f}"/>'
                '<circle class="p50" r="4" cx="{a:.1f}" cy="{y:.1f}"/>'
                '<circle class="p90" r="3" cx="{b:.1f}" cy="{y:.1f}"/>'
                '<circle class="p99" r="3" cx="{c:.1f}" cy="{y:.1f}"/></g>'
            ).format(tip=tip, lx=left - 6, ty=y + 4, version=version, a=x(p50), b=x(p90), c=x(p99), y=y)
        )
    return _svg("ranges", width, height, label, _join(body))


#: Series a :func:`lines` chart draws at most (each has a colour of its own in the stylesheet).
MAX_SERIES = 8


def lines(series: Sequence[tuple[str, Sequence[int | None]]], days: Sequence[str], label: str, unit: str,
          *, height: int = 180) -> Markup:  # fmt: skip
    """One line per series (``(name, one value per day)``) over the same days, on one scale: products
    compared at a glance. ``None`` (a day under k machines) breaks the line. Each point has a tooltip;
    the series' names and colours are the legend the page shows beside it (class ``s0`` ... ``s7``).
    """
    width, left, bottom, top_pad, right = 720, 44, 18, 8, 8
    top = max((v for _, values in series for v in values if v is not None), default=0) or 1
    step = (width - left - right) / max(1, len(days) - 1)
    plot = height - bottom - top_pad
    base = height - bottom
    body = [
        M('<line class="axis" x1="{l}" y1="{b}" x2="{w}" y2="{b}"/>').format(l=left, b=base, w=width - right),
        M('<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>').format(left - 4, top_pad + 4, number(top)),
        M('<text class="tick" x="{}" y="{}" text-anchor="end">0</text>').format(left - 4, base),
    ]
    for n, (name, values) in enumerate(series[:MAX_SERIES]):
        points: list[list[tuple[float, float]]] = [[]]
        dots = []
        for i, (day, v) in enumerate(zip(days, values, strict=True)):
            x = left + i * step
            if v is None:
                points.append([])
                continue
            y = base - plot * v / top
            points[-1].append((x, y))
            dots.append(
                M('<circle r="2.5" cx="{:.1f}" cy="{:.1f}"><title>{}</title></circle>').format(
                    x, y, f"{name}, {day}: {number(v)} {unit}"
                )
            )
        drawn = [
            M('<polyline points="{}"/>').format(" ".join(f"{x:.1f},{y:.1f}" for x, y in s))
            for s in points
            if len(s) > 1
        ]
        body.append(
            M('<g class="series s{n}" data-series="{name}">{lines}{dots}</g>').format(
                n=n, name=name, lines=_join(drawn), dots=_join(dots)
            )
        )
    if days:
        body.append(M('<text class="tick" x="{}" y="{}">{}</text>').format(left, height - 4, days[0]))
        body.append(
            M('<text class="tick" x="{}" y="{}" text-anchor="end">{}</text>').format(
                width - right, height - 4, days[-1]
            )
        )
    return _svg("lines", width, height, label, _join(body))
