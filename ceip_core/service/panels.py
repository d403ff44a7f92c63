"""The dashboard's panels as data for the templates (``templates/panels.html``), from query answers.

Rendering only: every number comes from an answer of ``ceip_core.service.queries`` (the same answers the
query API sends), so the page cannot disagree with the API and k-anonymity is applied before anything
gets here. Each row carries its exact numbers in ``data-*`` attributes beside the rounded text people
read. No HTML is built here: the templates autoescape every value, and the charts are ``Markup`` made by
escaping formats (``charts``), so text a report chose can only ever be text.

Every panel renders a bounded number of rows, whatever is stored (a sender can invent thousands of
feature names or settings); the rest are counted in a "N more" line that points to the JSON, which has
them all. Each row's values are computed once: a page costs time linear in what it shows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup

from ceip_core.service import charts
from ceip_core.service.charts import number, percent

STYLESHEET = "/dashboard/static/dashboard.css"
#: Problems listed on a page, at most (the most machines first); the JSON link has every one.
MAX_PROBLEMS = 50
#: Feature rows (features and their labels) listed on a page, at most, the most adopted first.
MAX_FEATURE_ROWS = 100
#: Configuration fields drawn on a page, at most (the system's fields first).
MAX_CONFIG_KEYS = 40
#: Timing metrics drawn on a page, at most.
MAX_METRICS = 30

#: How the configuration panel groups the distributions, in order: (title, key or key prefix).
CONFIG_SECTIONS = (
    ("Operating system", "system.os"),
    ("OS version", "system.os_version"),
    ("Architecture", "system.arch"),
    ("Logical CPUs", "system.cpu_logical"),
    ("Physical CPUs", "system.cpu_physical"),
    ("Memory", "system.memory_bucket"),
    ("Hardware features", "system.features."),
)

Panel = dict[str, Any]


def link(path: str, params: Mapping[str, Any]) -> str:
    """``path`` with the parameters that are set (the template escapes it for the attribute)."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return f"{path}?{query}" if query else path


def _panel(answer: Mapping[str, Any], json_href: str, why: Markup, **rest: Any) -> Panel:
    return {"k": answer["k"], "hidden": answer.get("hidden", 0), "json_href": json_href, "why": why, **rest}


# -- the product page's panels ------------------------------------------------------------------------


def problems(answer: Mapping[str, Any], trends: Mapping[str, Any], days: Sequence[str], json_href: str) -> Panel:
    """Problems ranked by distinct machines: a bar for machines beside the occurrences, and a trend."""
    why = Markup(
        "Ranked by <b>distinct machines</b>, then occurrences: one machine failing a hundred times shows as a "
        "short bar with a large count, a hundred machines failing once as a long bar. The trend is machines "
        "per day; a tick on its baseline marks a day of fewer than k machines."
    )
    rows = answer["problems"]
    per_day: dict[tuple[str, str, str], dict[str, int | None]] = defaultdict(dict)
    for t in trends["trends"]:
        per_day[t["product"], t["kind"], t["signature"]][t["day"]] = t["machines"]
    top = max((r["machines"] for r in rows), default=1)
    shown = []
    for rank, r in enumerate(rows[:MAX_PROBLEMS], 1):
        series = [per_day[r["product"], r["kind"], r["signature"]].get(day, 0) for day in days]
        shown.append(
            {
                **r,
                "rank": rank,
                "bar": charts.bar(r["machines"], top, f"{r['machines']} machines"),
                "machines_text": number(r["machines"]),
                "occurrences_text": number(r["occurrences"]),
                "per_machine": number(r["occurrences"] / r["machines"]),
                "trend": charts.sparkline(series, f"machines per day: {r['signature']}"),
                "first_seen": r["first_seen"][:16].replace("T", " "),
                "last_seen": r["last_seen"][:16].replace("T", " "),
                "versions": ", ".join(r["versions"]),
            }
        )
    return _panel(answer, json_href, why, rows=shown, more=len(rows) - len(shown))


def features(answer: Mapping[str, Any], json_href: str) -> Panel:
    """Adoption (share of active machines) and uses per active machine, per feature and label."""
    why = Markup(
        "<b>Adoption</b> is the share of the machines active in the range that used the feature at least once; "
        "<b>uses per active machine</b> is how much it is used. Labels (kinds of use) are listed under the feature."
    )
    rows = answer["features"]
    # Each feature's own adoption, looked up once per row: labels sort under their feature.
    whole = {r["name"]: r["adoption"] for r in rows if r["label"] is None}
    ordered = sorted(
        rows, key=lambda r: (-whole.get(r["name"], r["adoption"]), r["name"], r["label"] is not None, -r["adoption"])
    )
    shown = [
        {
            **r,
            "bar": charts.bar(r["adoption"], 1.0, f"{percent(r['adoption'])} of active machines"),
            "adoption": percent(r["adoption"]),
            "adoption_exact": repr(r["adoption"]),
            "uses_exact": repr(r["uses_per_active_machine"]),
            "machines_text": number(r["machines"]),
            "active_text": number(r["active_machines"]),
            "uses": number(r["uses_per_active_machine"]),
        }
        for r in ordered[:MAX_FEATURE_ROWS]
    ]
    return _panel(answer, json_href, why, rows=shown, more=len(rows) - len(shown))


def config(answer: Mapping[str, Any], json_href: str) -> Panel:
    """One distribution per system field (and hardware feature, and product setting)."""
    k = answer["k"]
    why = Markup(
        "Machines by configuration. A machine that changed (an upgrade, more memory) counts under each value it "
        'had in the range. Values of fewer than {k} machines are folded into "other".'
    ).format(k=k)
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in answer["config"]:
        by_key[r["key"]].append(r)
    grouped: list[tuple[str, list[str]]] = []
    taken: set[str] = set()
    for title, key in CONFIG_SECTIONS:
        keys = sorted(k_ for k_ in by_key if k_ == key or (key.endswith(".") and k_.startswith(key)))
        taken.update(keys)
        grouped.append((title, keys))
    rest = sorted(k_ for k_ in by_key if k_ not in taken)
    grouped += [("Other system fields", [k_ for k_ in rest if k_.startswith("system.")])]
    grouped += [("Product settings", [k_ for k_ in rest if not k_.startswith("system.")])]
    sections, budget = [], MAX_CONFIG_KEYS
    for title, keys in grouped:
        keys, budget = keys[:budget], budget - len(keys[:budget])
        if not keys:
            continue
        drawn = []
        for key in keys:
            values = [
                (r["value"], r["share"], f"{percent(r['share'])} · {number(r['machines'])}",
                 {"key": key, "value": r["value"], "machines": r["machines"]})
                for r in by_key[key]
            ]  # fmt: skip
            heading = len(keys) > 1 or key != dict(CONFIG_SECTIONS).get(title)
            drawn.append({"key": key, "heading": heading, "chart": charts.hbars(values, f"{key}: machines by value")})
        sections.append({"title": title, "fields": drawn})
    more = len(by_key) - sum(len(s["fields"]) for s in sections)
    return _panel(answer, json_href, why, sections=sections, more=more)


def performance(answer: Mapping[str, Any], json_href: str) -> Panel:
    """p50, p90 and p99 per timing metric and version: a regression shows as marks moving right."""
    why = Markup(
        "Percentiles per metric and product version, on a log scale: the dot is p50 (half the measurements are "
        "faster), the line reaches p99. A newer version whose marks sit further right got slower. The unit is in "
        "the metric's name."
    )
    by_metric: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in answer["timings"]:
        by_metric[r["name"]].append(r)
    metrics = []
    for name, found in sorted(by_metric.items())[:MAX_METRICS]:
        rows = [
            {
                **r,
                **{f"{c}_exact": repr(r[c]) for c in ("p50", "p90", "p99")},
                "cells": [number(r[c]) for c in ("p50", "p90", "p99", "machines", "count")],
            }
            for r in found
        ]
        chart = charts.ranges([(r["version"], r["p50"], r["p90"], r["p99"]) for r in found], f"{name} by version")
        metrics.append({"name": name, "chart": chart, "rows": rows})
    return _panel(answer, json_href, why, metrics=metrics, more=len(by_metric) - len(metrics))


def participation(answer: Mapping[str, Any], days: Sequence[str], json_href: str) -> Panel:
    """Active machines per day, and opt-outs (deletion requests) per day."""
    k = answer["k"]
    why = Markup(
        "Machines that used the product, per day (days of fewer than {k} machines are left out), and opt-outs: "
        "deletion requests received, per day."
    ).format(k=k)
    active = {r["day"]: r["active_machines"] for r in answer["active"]}
    optouts = {r["day"]: r["requests"] for r in answer["deletions"]}
    return _panel(
        answer,
        json_href,
        why,
        active_chart=charts.columns(
            [(d, active.get(d)) for d in days], "active machines per day", "machines", css="columns active"
        ),
        optouts_total=number(sum(optouts.values())),
        optouts_chart=charts.columns(
            [(d, optouts.get(d, 0)) for d in days], "opt-outs per day", "opt-outs", css="columns optouts"
        ),
    )


def summary(active: int | None, problems_shown: int, optouts: int, k: int) -> list[dict[str, str]]:
    """The tiles at the top of a product page."""
    shown = number(active) if active is not None else f"fewer than {k}"
    return [
        {"css": "active", "label": "Active machines", "value": shown},
        {"css": "problems", "label": "Problems shown", "value": number(problems_shown)},
        {"css": "optouts", "label": "Opt-outs", "value": number(optouts)},
        {"css": "k", "label": "k-anonymity", "value": f"groups under {k} machines hidden"},
    ]
