"""The dashboard of ``ceip serve``: which problems hit the most machines and which features matter.

Routes (added by :func:`add_routes`): ``GET /`` leads to ``GET /dashboard``, the list of products;
``GET /dashboard?product=P&version=V&since=D&until=D`` is a product's page; ``GET|POST /dashboard/login``
and ``POST /dashboard/logout``; ``GET /dashboard/static/dashboard.css``. A page request without a valid
session is redirected to the login page, which trades the query token for a session cookie
(``ceip_core.service.sessions``).

Every number on a page is an answer of ``ceip_core.service.queries``, the code behind the query API and
``ceip report``, for the same filters: the page shows what the API says, k-anonymity included. The
pages are plain HTML and server-side SVG without a single script, and the Content-Security-Policy
forbids scripts, so text from a report can only ever be text.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote

import attrs
from aiohttp import web
from attrs import frozen

from ceip_core.service import panels, queries, sessions
from ceip_core.service.auth import matches
from ceip_core.service.charts import esc, number
from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Storage, StorageUnavailable

DASHBOARD = "/dashboard"
LOGIN = "/dashboard/login"
LOGOUT = "/dashboard/logout"
#: The range a product page shows unless told otherwise, in days (ending today).
DEFAULT_DAYS = 30
#: The longest range a page draws, in days: one column per day.
MAX_DAYS = 400
#: The quick ranges offered above every page, in days.
QUICK_DAYS = (7, 30, 90, 365)
#: Answers never go to a cache or another site; scripts, frames and foreign resources are refused.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@frozen
class View:
    """What a page shows: a product (or none: the list of products), a version (or all), a range of days."""

    product: str | None
    version: str | None
    since: int
    until: int

    @classmethod
    def parse(cls, params: Mapping[str, str], today: int) -> View:
        """From the page's query parameters; raises ``queries.QueryError`` saying what is wrong."""
        given = queries.Filters.parse(params)
        until = today if given.until is None else given.until
        since = until - DEFAULT_DAYS + 1 if given.since is None else given.since
        if since > until:
            raise queries.QueryError("since is after until: choose a start day before the end day")
        if until - since + 1 > MAX_DAYS:
            raise queries.QueryError(f"the range is longer than {MAX_DAYS} days: choose a shorter one")
        return cls(given.product, given.version, since, until)

    @property
    def filters(self) -> queries.Filters:
        return queries.Filters(self.product, self.version, self.since, self.until)

    @property
    def days(self) -> list[str]:
        return [queries.day_text(d) for d in range(self.since, self.until + 1)]

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query parameters that show this view, with ``changes``."""
        found = {
            "product": self.product,
            "version": self.version,
            "since": queries.day_text(self.since),
            "until": queries.day_text(self.until),
        }
        return {**found, **changes}


def _today() -> int:
    return int(time.time() // DAY_S)


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def signed_in(request: web.Request, token: str) -> bool:
    """True if the request carries a valid session cookie."""
    return sessions.valid(request.cookies.get(sessions.COOKIE), token)


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard page of this service, never another site (nor a header)."""
    if target and target.startswith(DASHBOARD) and not target.startswith(LOGIN) and target.isprintable():
        return target
    return DASHBOARD


class Dashboard:
    """The dashboard's handlers, for one service: its storage, its k and its token."""

    def __init__(self, storage: Storage, token: str, k: int, products: list[str]) -> None:
        self.storage = storage
        self.token = token
        self.k = k
        self.products = products

    # -- login ------------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        target = _safe_next(request.query.get("next"))
        if signed_in(request, self.token):
            raise web.HTTPSeeOther(target)
        return _html(panels.page("ceip: log in", panels.login_form(target, None)))

    async def login(self, request: web.Request) -> web.Response:
        form: dict[str, list[str]] = {}
        if request.content_type == "application/x-www-form-urlencoded":  # what the login form sends
            form = parse_qs((await request.read()).decode("utf-8", "replace"))
        given, target = form.get("token", [""])[0], _safe_next(form.get("next", [""])[0])
        if not matches(given, self.token):
            body = panels.login_form(target, "That is not the query token. Try again.")
            return _html(panels.page("ceip: log in", body), status=401)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            sessions.COOKIE,
            sessions.issue(self.token),
            max_age=sessions.SESSION_TTL_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        response = web.HTTPSeeOther(LOGIN)
        response.del_cookie(sessions.COOKIE, path="/")
        raise response

    # -- pages ------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        if not signed_in(request, self.token):
            raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='')}")
        title, status = "ceip dashboard", 200
        try:
            view = View.parse(request.query, _today())
            title = f"ceip: {view.product}" if view.product else title
            body = await (self._product(view) if view.product else self._index(view))
        except queries.QueryError as exc:
            body, status = self._header(None) + panels.error_panel(str(exc)), 400
        except StorageUnavailable:
            message = "The database is unavailable right now; reload the page in a moment."
            body, status = self._header(view) + panels.error_panel(message), 503
        return _html(panels.page(title, body, header=panels.logout_button()), status)

    def _header(self, view: View | None) -> str:
        """Product navigation and the range form."""
        if view is None:
            return f'<nav class="products"><a href="{DASHBOARD}">All products</a></nav>'
        nav = [f'<a href="{panels.link(DASHBOARD, view.params(product=None, version=None))}"'
               f'{" class=current" if view.product is None else ""}>All products</a>']  # fmt: skip
        for product in self.products:
            css = " class=current" if product == view.product else ""
            href = panels.link(DASHBOARD, view.params(product=product, version=None))
            nav.append(f'<a href="{href}"{css}>{esc(product)}</a>')
        return f'<nav class="products">{"".join(nav)}</nav>'

    def _range_form(self, view: View, versions: list[str]) -> str:
        options = [f'<option value=""{"" if view.version else " selected"}>All versions</option>']
        for version in versions:
            selected = " selected" if version == view.version else ""
            options.append(f'<option value="{esc(version)}"{selected}>{esc(version)}</option>')
        quick = []
        for days in QUICK_DAYS:
            until = _today()
            params = view.params(since=queries.day_text(until - days + 1), until=queries.day_text(until))
            quick.append(f'<a href="{panels.link(DASHBOARD, params)}">last {days} days</a>')
        product = esc(view.product or "")
        return (
            f'<form class="range" method="get" action="{DASHBOARD}">'
            f'<input type="hidden" name="product" value="{product}">'
            f'<label>Version <select name="version">{"".join(options)}</select></label>'
            f'<label>From <input type="date" name="since" value="{queries.day_text(view.since)}"></label>'
            f'<label>To <input type="date" name="until" value="{queries.day_text(view.until)}"></label>'
            f'<button type="submit">Show</button><span class="quick">{" · ".join(quick)}</span></form>'
        )

    async def _ask(self, name: str, filters: queries.Filters) -> dict[str, Any]:
        return await queries.QUERIES[name](self.storage, filters, self.k)

    async def _index(self, view: View) -> str:
        """Every allowlisted product, with its active machines in the range."""
        answer = await self._ask("versions", view.filters)
        machines = {r["product"]: r["machines"] for r in answer["versions"] if r["version"] is None}
        rows = []
        for product in self.products:
            href = panels.link(DASHBOARD, view.params(product=product))
            n = machines.get(product)
            shown = number(n) if n is not None else f"none, or fewer than {self.k}"
            rows.append(
                f'<tr class="product" data-product="{esc(product)}" data-machines="{n or ""}">'
                f'<td><a href="{href}">{esc(product)}</a></td><td class="n">{shown}</td></tr>'
            )
        table = (
            '<section class="panel"><h1>Products</h1><p class="why">Machines that used each product in the range. '
            "Open a product for its problems, feature adoption, configuration, performance and participation.</p>"
            '<table class="products"><thead><tr><th>Product</th><th>Active machines</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></section>"
        )
        return self._header(view) + self._range_form(view, []) + table

    async def _product(self, view: View) -> str:
        """A product's page: every panel, for the view's version and range."""
        filters = view.filters
        every_version = await self._ask("versions", attrs.evolve(filters, version=None))
        versions = [r["version"] for r in every_version["versions"] if r["version"] is not None]
        answers = {name: await self._ask(name, filters) for name in ("problems", "trends", "features", "config",
                                                                      "timings", "participation")}  # fmt: skip

        def api(name: str) -> str:
            return panels.link(f"/v1/query/{name}", view.params())

        shown = [r for r in every_version["versions"] if r["version"] == view.version]
        active = shown[0]["machines"] if shown else None
        optouts = sum(r["requests"] for r in answers["participation"]["deletions"])
        title = f'<h1>{esc(view.product)} <span class="version">{esc(view.version or "all versions")}'
        title += f'</span> <span class="range">{view.days[0]} to {view.days[-1]}</span></h1>'
        return "".join(
            [
                self._header(view),
                self._range_form(view, versions),
                title,
                panels.summary(active, len(answers["problems"]["problems"]), optouts, self.k),
                panels.problems(answers["problems"], answers["trends"], view.days, api("problems")),
                panels.features(answers["features"], api("features")),
                panels.config(answers["config"], api("config")),
                panels.performance(answers["timings"], api("timings")),
                panels.participation(answers["participation"], view.days, api("participation")),
            ]
        )


async def stylesheet(request: web.Request) -> web.Response:
    """``GET /dashboard/static/dashboard.css``: no secret in it, so no login needed."""
    css = resources.files("ceip_core.service").joinpath("static/dashboard.css").read_text(encoding="utf-8")
    return web.Response(text=css, content_type="text/css", headers={"Cache-Control": "max-age=3600"})


async def root(request: web.Request) -> web.Response:
    """``GET /``: a person who opens the service's address finds the dashboard."""
    raise web.HTTPSeeOther(DASHBOARD)


def add_routes(app: web.Application, dashboard: Dashboard) -> None:
    app.router.add_get("/", root)
    app.router.add_get(DASHBOARD, dashboard.page)
    app.router.add_get(LOGIN, dashboard.login_page)
    app.router.add_post(LOGIN, dashboard.login)
    app.router.add_post(LOGOUT, dashboard.logout)
    app.router.add_get(panels.STYLESHEET, stylesheet)
