"""The dashboard's HTML: a page shell, the login form, and one panel per question, from query answers.

Rendering only: every number comes from an answer of ``ceip_core.service.queries`` (the same answers the
query API sends), so the page cannot disagree with the API and k-anonymity is applied before anything
gets here. Each row carries its exact numbers in ``data-*`` attributes beside the rounded text people
read. Every value that came from a report is escaped (``charts.esc``); plain string building keeps the
service free of a template engine.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from ceip_core.service import charts
from ceip_core.service.charts import esc, number, percent

STYLESHEET = "/dashboard/static/dashboard.css"
#: Problems listed on a page, at most (the most machines first); the JSON link has every one.
MAX_PROBLEMS = 50

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


def page(title: str, body: str, *, header: str = "") -> str:
    """A whole HTML document."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="{STYLESHEET}"></head>'
        f'<body><header class="top"><span class="brand">ceip</span> <span class="what">receiving service</span>'
        f"{header}</header><main>{body}</main></body></html>"
    )


def login_form(next_url: str, error: str | None) -> str:
    """The login page's body: one field, the query token."""
    problem = f'<p class="error" role="alert">{esc(error)}</p>' if error else ""
    return (
        '<section class="panel login"><h1>Dashboard login</h1>'
        "<p>Enter the service's query token: the one <code>ceip serve</code> was given with <code>--token</code>, "
        "or the one it wrote to <code>query-token</code> in its data folder.</p>"
        f'{problem}<form method="post" action="/dashboard/login">'
        f'<input type="hidden" name="next" value="{esc(next_url)}">'
        '<label>Query token <input type="password" name="token" autocomplete="current-password" required autofocus>'
        '</label> <button type="submit">Log in</button></form></section>'
    )


def logout_button() -> str:
    return '<form class="logout" method="post" action="/dashboard/logout"><button type="submit">Log out</button></form>'


def error_panel(message: str) -> str:
    return f'<section class="panel"><p class="error" role="alert">{esc(message)}</p></section>'


def link(path: str, params: Mapping[str, Any]) -> str:
    """``path`` with the parameters that are set, as an escaped attribute value."""
    query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
    return esc(f"{path}?{query}" if query else path)


def _panel(key: str, title: str, why: str, json_href: str, body: str) -> str:
    return (
        f'<section class="panel" id="{key}"><div class="panel-head"><h2>{esc(title)}</h2>'
        f'<a class="json" href="{json_href}">JSON</a></div><p class="why">{why}</p>{body}</section>'
    )


def _empty(hidden: int, k: int, what: str) -> str:
    note = f" ({hidden} group(s) of fewer than {k} machines hidden)" if hidden else ""
    return f'<p class="empty">No {what} in this range{note}.</p>'


def _hidden_note(hidden: int, k: int) -> str:
    return f'<p class="note">{hidden} group(s) of fewer than {k} machines hidden.</p>' if hidden else ""


# -- the product page's panels ------------------------------------------------------------------------


def problems(answer: Mapping[str, Any], trends: Mapping[str, Any], days: Sequence[str], json_href: str) -> str:
    """Problems ranked by distinct machines: a bar for machines beside the occurrences, and a trend."""
    rows, k = answer["problems"], answer["k"]
    why = (
        "Ranked by <b>distinct machines</b>, then occurrences: one machine failing a hundred times shows as a "
        "short bar with a large count, a hundred machines failing once as a long bar. The trend is machines "
        "per day; a tick on its baseline marks a day of fewer than k machines."
    )
    if not rows:
        return _panel("problems", "Problems", why, json_href, _empty(answer["hidden"], k, "problems"))
    per_day: dict[tuple[str, str, str], dict[str, int | None]] = defaultdict(dict)
    for t in trends["trends"]:
        per_day[t["product"], t["kind"], t["signature"]][t["day"]] = t["machines"]
    top = max(r["machines"] for r in rows)
    more = len(rows) - MAX_PROBLEMS
    rows = rows[:MAX_PROBLEMS]
    body = [
        '<table class="problems"><thead><tr><th>#</th><th>Problem</th><th>Machines</th><th>Occurrences</th>'
        "<th>Trend</th><th>First seen</th><th>Last seen</th><th>Versions</th></tr></thead><tbody>"
    ]
    for rank, r in enumerate(rows, 1):
        series = [per_day[r["product"], r["kind"], r["signature"]].get(day, 0) for day in days]
        per_machine = r["occurrences"] / r["machines"]
        machines_bar = charts.bar(r["machines"], top, f"{r['machines']} machines")
        trend = charts.sparkline(series, f"machines per day: {r['signature']}")
        body.append(
            f'<tr class="problem" data-kind="{esc(r["kind"])}" data-signature="{esc(r["signature"])}" '
            f'data-machines="{r["machines"]}" data-occurrences="{r["occurrences"]}">'
            f'<td class="rank">{rank}</td>'
            f'<td class="signature"><span class="kind">{esc(r["kind"])}</span> <code>{esc(r["signature"])}</code></td>'
            f'<td class="machines">{machines_bar}'
            f' <span class="n">{number(r["machines"])}</span></td>'
            f'<td class="occurrences"><span class="n">{number(r["occurrences"])}</span>'
            f' <span class="ratio">{number(per_machine)} per machine</span></td>'
            f'<td class="trend">{trend}</td>'
            f'<td class="seen">{esc(r["first_seen"][:16].replace("T", " "))}</td>'
            f'<td class="seen">{esc(r["last_seen"][:16].replace("T", " "))}</td>'
            f'<td class="versions">{esc(", ".join(r["versions"]))}</td></tr>'
        )
    body.append("</tbody></table>")
    if more > 0:
        body.append(f'<p class="note">{more} more problem(s), ranked lower: see the JSON.</p>')
    body.append(_hidden_note(answer["hidden"], k))
    return _panel("problems", "Problems", why, json_href, "".join(body))


def features(answer: Mapping[str, Any], json_href: str) -> str:
    """Adoption (share of active machines) and uses per active machine, per feature and label."""
    rows, k = answer["features"], answer["k"]
    why = (
        "<b>Adoption</b> is the share of the machines active in the range that used the feature at least once; "
        "<b>uses per active machine</b> is how much it is used. Labels (kinds of use) are listed under the feature."
    )
    if not rows:
        return _panel("features", "Feature adoption", why, json_href, _empty(answer["hidden"], k, "features"))
    ordered = sorted(rows, key=lambda r: (-_adoption_of(rows, r), r["name"], r["label"] is not None, -r["adoption"]))
    body = [
        '<table class="features"><thead><tr><th>Feature</th><th>Adoption</th><th>Machines</th>'
        "<th>Uses per active machine</th></tr></thead><tbody>"
    ]
    for r in ordered:
        label = r["label"]
        name = esc(r["name"]) if label is None else f'<span class="sub">{esc(label)}</span>'
        adoption = percent(r["adoption"])
        adoption_bar = charts.bar(r["adoption"], 1.0, f"{adoption} of active machines")
        body.append(
            f'<tr class="feature{"" if label is None else " label"}" data-name="{esc(r["name"])}" '
            f'data-label="{"" if label is None else esc(label)}" data-machines="{r["machines"]}" '
            f'data-adoption="{r["adoption"]!r}" data-uses-per-machine="{r["uses_per_active_machine"]!r}">'
            f"<td>{name}</td>"
            f'<td class="adoption">{adoption_bar} <span class="n">{adoption}</span></td>'
            f'<td class="n">{number(r["machines"])} of {number(r["active_machines"])}</td>'
            f'<td class="n">{number(r["uses_per_active_machine"])}</td></tr>'
        )
    body.append("</tbody></table>")
    body.append(_hidden_note(answer["hidden"], k))
    return _panel("features", "Feature adoption", why, json_href, "".join(body))


def _adoption_of(rows: Iterable[Mapping[str, Any]], row: Mapping[str, Any]) -> float:
    """The adoption of a row's feature as a whole, so labels sort under their feature."""
    whole = next((r["adoption"] for r in rows if r["name"] == row["name"] and r["label"] is None), row["adoption"])
    return float(whole)


def config(answer: Mapping[str, Any], json_href: str) -> str:
    """One distribution per system field (and hardware feature, and product setting)."""
    rows, k = answer["config"], answer["k"]
    why = (
        "Machines by configuration. A machine that changed (an upgrade, more memory) counts under each value it "
        f'had in the range. Values of fewer than {k} machines are folded into "other".'
    )
    if not rows:
        return _panel("config", "Configuration", why, json_href, _empty(answer["hidden"], k, "configuration"))
    by_key: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    sections: list[tuple[str, list[str]]] = []
    taken: set[str] = set()
    for title, key in CONFIG_SECTIONS:
        keys = sorted(k_ for k_ in by_key if k_ == key or (key.endswith(".") and k_.startswith(key)))
        taken.update(keys)
        sections.append((title, keys))
    rest = sorted(k_ for k_ in by_key if k_ not in taken)
    sections += [("Other system fields", [k_ for k_ in rest if k_.startswith("system.")])]
    sections += [("Product settings", [k_ for k_ in rest if not k_.startswith("system.")])]
    body = ['<div class="distributions">']
    for title, keys in sections:
        if not keys:
            continue
        body.append(f'<div class="distribution"><h3>{esc(title)}</h3>')
        for key in keys:
            if len(keys) > 1 or key != dict(CONFIG_SECTIONS).get(title):
                body.append(f"<h4><code>{esc(key)}</code></h4>")
            values = [
                (r["value"], r["share"], f"{percent(r['share'])} · {number(r['machines'])}",
                 {"key": key, "value": r["value"], "machines": r["machines"]})
                for r in by_key[key]
            ]  # fmt: skip
            body.append(charts.hbars(values, f"{key}: machines by value"))
        body.append("</div>")
    body.append("</div>")
    body.append(_hidden_note(answer["hidden"], k))
    return _panel("config", "Configuration", why, json_href, "".join(body))


def performance(answer: Mapping[str, Any], json_href: str) -> str:
    """p50, p90 and p99 per timing metric and version: a regression shows as marks moving right."""
    rows, k = answer["timings"], answer["k"]
    why = (
        "Percentiles per metric and product version, on a log scale: the dot is p50 (half the measurements are "
        "faster), the line reaches p99. A newer version whose marks sit further right got slower. The unit is in "
        "the metric's name."
    )
    if not rows:
        return _panel("performance", "Performance", why, json_href, _empty(answer["hidden"], k, "timings"))
    by_metric: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        by_metric[r["name"]].append(r)
    body = ['<div class="metrics">']
    for name, found in sorted(by_metric.items()):
        body.append(f'<div class="metric"><h3><code>{esc(name)}</code></h3>')
        body.append(charts.ranges([(r["version"], r["p50"], r["p90"], r["p99"]) for r in found], f"{name} by version"))
        body.append(
            '<table class="timings"><thead><tr><th>Version</th><th>p50</th><th>p90</th><th>p99</th>'
            "<th>Machines</th><th>Measurements</th></tr></thead><tbody>"
        )
        for r in found:
            body.append(
                f'<tr class="timing" data-name="{esc(name)}" data-version="{esc(r["version"])}" '
                f'data-p50="{r["p50"]!r}" data-p90="{r["p90"]!r}" data-p99="{r["p99"]!r}" '
                f'data-machines="{r["machines"]}"><td>{esc(r["version"])}</td>'
                + "".join(f'<td class="n">{number(r[c])}</td>' for c in ("p50", "p90", "p99", "machines", "count"))
                + "</tr>"
            )
        body.append("</tbody></table></div>")
    body.append("</div>")
    body.append(_hidden_note(answer["hidden"], k))
    return _panel("performance", "Performance", why, json_href, "".join(body))


def participation(answer: Mapping[str, Any], days: Sequence[str], json_href: str) -> str:
    """Active machines per day, and opt-outs (deletion requests) per day."""
    k = answer["k"]
    why = (
        f"Machines that used the product, per day (days of fewer than {k} machines are left out), and opt-outs: "
        "deletion requests received, per day."
    )
    active = {r["day"]: r["active_machines"] for r in answer["active"]}
    optouts = {r["day"]: r["requests"] for r in answer["deletions"]}
    body = [
        "<h3>Active machines per day</h3>",
        charts.columns([(d, active.get(d)) for d in days], "active machines per day", "machines", css="columns active"),
        f'<h3>Opt-outs per day <span class="total">{number(sum(optouts.values()))} in this range</span></h3>',
        charts.columns([(d, optouts.get(d, 0)) for d in days], "opt-outs per day", "opt-outs", css="columns optouts"),
    ]
    return _panel("participation", "Participation", why, json_href, "".join(body))


def summary(active: int | None, problems_shown: int, optouts: int, k: int) -> str:
    """The tiles at the top of a product page."""
    tiles = [
        ("active", "Active machines", number(active) if active is not None else f"fewer than {k}"),
        ("problems", "Problems shown", number(problems_shown)),
        ("optouts", "Opt-outs", number(optouts)),
        ("k", "k-anonymity", f"groups under {k} machines hidden"),
    ]
    cells = "".join(
        f'<div class="tile {css}"><span class="label">{esc(label)}</span><span class="value">{esc(value)}</span></div>'
        for css, label, value in tiles
    )
    return f'<div class="tiles">{cells}</div>'
