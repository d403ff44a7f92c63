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
#: Problems drawn per version on a product page (the most machines first), and listed across products.
MAX_VERSION_PROBLEMS = 8
MAX_TOP_PROBLEMS = 10
#: What each query's ``hidden`` counts, in the words of the privacy note; in the order the note lists them.
HIDDEN_WHAT = {
    "versions": "product(s) or product version(s)",
    "problems": "problem(s)",
    "trends": "day(s) of a problem's trend",
    "problem_versions": "version(s) of a problem",
    "features": "feature or label row(s)",
    "config": 'configuration value(s), folded into "other"',
    "timings": "timing(s) of a version",
    "participation": "day(s) of active machines",
}

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


def summary(active: int | None, problems_shown: int, optouts: int, k: int, hidden: int) -> list[dict[str, str]]:
    """The tiles at the top of a product page."""
    shown = number(active) if active is not None else f"fewer than {k}"
    return [
        {"css": "active", "label": "Active machines", "value": shown},
        {"css": "problems", "label": "Problems shown", "value": number(problems_shown)},
        {"css": "optouts", "label": "Opt-outs", "value": number(optouts)},
        {"css": "k", "label": f"k-anonymity (k = {k})", "value": f"{number(hidden)} group(s) under {k} machines hidden",
         "href": "#privacy"},
    ]  # fmt: skip


def privacy(answers: Mapping[str, Mapping[str, Any]], k: int, too_few: str | None = None) -> Panel:
    """Says when and why numbers are hidden: what k-anonymity held back on this page, query by query.

    A newcomer's own few machines (or the one machine a test runs on) are exactly what k hides; without a
    word, an empty panel looks like a bug. ``too_few`` names what fewer than k machines used (a product or
    a version), if that is why the page is empty.
    """
    hidden = [
        {"query": name, "count": answers[name]["hidden"], "what": words}
        for name, words in HIDDEN_WHAT.items()
        if name in answers and answers[name]["hidden"]
    ]
    if too_few is not None:
        headline = f"Fewer than {k} machines used {too_few} in this range, so nothing about them is published here."
    elif hidden:
        headline = f"Some groups in this range have fewer than {k} machines, so their numbers are not shown."
    else:
        headline = f"Every group on this page has at least {k} machines: nothing is hidden."
    why = Markup(
        "Every number on the dashboard counts at least <b>k = {k}</b> machines (k-anonymity), so that no number "
        "describes one machine or a handful of them: a test machine's own reports, or a problem only one "
        "customer has, stay out of sight. Only how many groups were held back is shown. Nothing is thrown away: "
        "the reports are stored, and a group appears once {k} machines have it (<code>ceip serve --k</code> "
        "sets k)."
    ).format(k=k)
    return {"k": k, "headline": headline, "hidden": hidden, "total": sum(h["count"] for h in hidden), "why": why}


def overview(
    participation: Mapping[str, Any],
    versions: Mapping[str, Any],
    products: Sequence[str],
    days: Sequence[str],
    hrefs: Mapping[str, str],
    json_href: str,
) -> Panel:
    """The products side by side: active machines per day (one line each) and in the range, opt-outs."""
    k = participation["k"]
    why = Markup(
        "Machines that used each product, per day: one line per product on one scale (a day of fewer than {k} "
        "machines breaks its line). Open a product for its problems, features, configuration and performance."
    ).format(k=k)
    per_day: dict[str, dict[str, int]] = defaultdict(dict)
    for r in participation["active"]:
        per_day[r["product"]][r["day"]] = r["active_machines"]
    optouts: dict[str, int] = defaultdict(int)
    for r in participation["deletions"]:
        optouts[r["product"]] += r["requests"]
    machines = {r["product"]: r["machines"] for r in versions["versions"] if r["version"] is None}
    drawn = list(products[: charts.MAX_SERIES])
    rows = []
    for n, product in enumerate(products):
        found = machines.get(product)
        rows.append(
            {
                "product": product,
                "machines": found,
                "series": f"s{n}" if product in drawn else None,
                "href": hrefs[product],
                "shown": number(found) if found is not None else f"none, or fewer than {k}",
                "optouts": number(optouts.get(product, 0)),
            }
        )
    chart = charts.lines(
        [(p, [per_day[p].get(d) for d in days]) for p in drawn], days, "active machines per day, by product", "machines"
    )
    return _panel(participation, json_href, why, rows=rows, chart=chart)


def top_problems(
    answer: Mapping[str, Any], versions: Mapping[str, Any], hrefs: Mapping[str, str], json_href: str
) -> Panel:
    """The problems that hit the most machines, across products, with the share of each product's machines."""
    why = Markup(
        "The problems of every product, ranked by <b>distinct machines</b>. The bar is the share of the "
        "product's active machines that had the problem, so a small product's problems compare fairly with a "
        "large one's."
    )
    machines = {r["product"]: r["machines"] for r in versions["versions"] if r["version"] is None}
    rows = []
    for rank, r in enumerate(answer["problems"][:MAX_TOP_PROBLEMS], 1):
        active = machines.get(r["product"])
        share = r["machines"] / active if active else None
        rows.append(
            {
                **r,
                "rank": rank,
                "href": hrefs.get(r["product"], ""),
                "machines_text": number(r["machines"]),
                "occurrences_text": number(r["occurrences"]),
                "share": percent(share) if share is not None else "",
                "bar": charts.bar(share or 0.0, 1.0, f"{percent(share or 0.0)} of the {r['product']} machines"),
            }
        )
    return _panel(answer, json_href, why, rows=rows, more=len(answer["problems"]) - len(rows))


def problem_versions(answer: Mapping[str, Any], json_href: str) -> Panel:
    """Per top problem, the share of each version's machines that had it: did a fix work?"""
    k = answer["k"]
    why = Markup(
        "For the problems that hit the most machines: the share of each version's active machines that had the "
        "problem. A fix that worked shows as a short bar in the version that has it; a problem a new version "
        "brought, as a bar that only that version has. A version where fewer than {k} machines had it says so "
        "instead of a number. The JSON has every problem."
    ).format(k=k)
    by_problem: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for r in answer["problem_versions"]:
        by_problem[r["kind"], r["signature"]].append(r)
    drawn = []
    for (kind, signature), found in list(by_problem.items())[:MAX_VERSION_PROBLEMS]:
        bars = []
        for r in found:
            if r["machines"] is None:
                text = f"under {k} of {number(r['active_machines'])}"
            else:
                text = f"{percent(r['share'])} · {number(r['machines'])} of {number(r['active_machines'])}"
            data = {"version": r["version"], "machines": "" if r["machines"] is None else r["machines"],
                    "active": r["active_machines"]}  # fmt: skip
            bars.append((r["version"], r["share"], text, data))
        label = f"{signature}: share of each version's machines"
        drawn.append({"kind": kind, "signature": signature, "chart": charts.hbars(bars, label, row="version-row")})
    return _panel(answer, json_href, why, problems=drawn, more=len(by_problem) - len(drawn))
