"""The dashboard of ``ceip serve``: which problems hit the most machines and which features matter.

Routes (added by :func:`add_routes`): ``GET /`` leads to ``GET /dashboard``, the list of products;
``GET /dashboard?product=P&version=V&since=D&until=D`` is a product's page; ``GET|POST /dashboard/login``
and ``POST /dashboard/logout``; ``GET /dashboard/static/dashboard.css``. A page request without a valid
session is redirected to the login page, which trades the query token for a session cookie
(``ceip_core.service.sessions``).

Every number on a page is an answer of ``ceip_core.service.queries``, the code behind the query API and
``ceip report``, for the same filters: the page shows what the API says, k-anonymity included. Pages are
Jinja2 templates (``templates/``) with autoescape on, and plain HTML and server-side SVG without a single
script; the Content-Security-Policy forbids scripts, so text from a report can only ever be text.

A page is rendered off the event loop (in a worker thread) with a bounded number of rows per panel, so
however much a sender stored, one page request cannot hold up ingest, health checks or other pages.

The login and logout forms accept a POST only from the service's own pages (``Origin`` and
``Sec-Fetch-Site`` checks), and failed logins are throttled.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import attrs
import jinja2
from aiohttp import web
from attrs import frozen

from ceip_core.service import panels, queries, sessions
from ceip_core.service.auth import matches
from ceip_core.service.rollups import DAY_S
from ceip_core.service.storage import Storage, StorageUnavailable, session_epoch

DASHBOARD = "/dashboard"
LOGIN = "/dashboard/login"
LOGOUT = "/dashboard/logout"
#: The range a product page shows unless told otherwise, in days (ending today).
DEFAULT_DAYS = 30
#: The longest range a page draws, in days: one column per day.
MAX_DAYS = 400
#: The quick ranges offered above every page, in days.
QUICK_DAYS = (7, 30, 90, 365)
#: Failed logins allowed per worker within ``LOGIN_WINDOW_S``; past that, logins answer 429 for a while.
MAX_FAILED_LOGINS = 10
LOGIN_WINDOW_S = 60.0
#: Answers never go to a cache or another site; scripts, frames and foreign resources are refused. The
#: referrer policy is ``same-origin``, not ``no-referrer``: under the latter a browser sends ``Origin: null``
#: with the login form's own post, and the origin check could not tell it from another site's.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
        "base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("ceip_core.service", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


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


async def _render(name: str, status: int = 200, **context: Any) -> web.Response:
    """A template rendered in a worker thread, as an HTML answer with the page headers."""
    context = {"stylesheet": panels.STYLESHEET, "logout_url": LOGOUT, "login_url": LOGIN, "signed_in": False, **context}
    text = await asyncio.to_thread(_templates.get_template(name).render, context)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8", headers=HEADERS)


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a dashboard page of this service, never another site (nor a header)."""
    if target and target.startswith(DASHBOARD) and not target.startswith(LOGIN) and target.isprintable():
        return target
    return DASHBOARD


def same_origin(request: web.Request) -> bool:
    """False if a browser says this request comes from another site's page (a cross-site form post).

    Browsers send ``Origin`` with every form post and ``Sec-Fetch-Site`` with most requests; a client
    that is not a browser sends neither and cannot be made to act for a person, so it passes.
    """
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    parts = urlsplit(origin)
    return parts.scheme == request.scheme and parts.netloc == request.host


class LoginThrottle:
    """Counts failed logins in a sliding window, per worker and in memory only (nothing about the sender).

    The query token has 256 bits when generated, so guessing is hopeless anyway; the throttle keeps a
    chosen, shorter token from being tried at the speed of the network.
    """

    def __init__(self, limit: int = MAX_FAILED_LOGINS, window_s: float = LOGIN_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.limit, self.window_s, self.clock = limit, window_s, clock
        self._failures: deque[float] = deque()

    def _expire(self) -> None:
        while self._failures and self._failures[0] <= self.clock() - self.window_s:
            self._failures.popleft()

    def retry_after(self) -> float:
        """Seconds until a login may be tried again, or 0 if it may be tried now."""
        self._expire()
        if len(self._failures) < self.limit:
            return 0.0
        return self._failures[0] + self.window_s - self.clock()

    def failed(self) -> None:
        self._expire()
        self._failures.append(self.clock())


class Dashboard:
    """The dashboard's handlers, for one service: its storage, its k and its token."""

    def __init__(self, storage: Storage, token: str, k: int, products: list[str],
                 today: Callable[[], int] | None = None) -> None:  # fmt: skip
        self.storage = storage
        self.token = token
        self.k = k
        self.products = products
        self.today = today or (lambda: int(time.time() // DAY_S))
        self.throttle = LoginThrottle()

    async def signed_in(self, request: web.Request) -> bool:
        """True if the request carries a valid session cookie of the current session epoch."""
        cookie = request.cookies.get(sessions.COOKIE)
        if not cookie:
            return False
        return sessions.valid(cookie, self.token, await session_epoch(self.storage))

    # -- login ------------------------------------------------------------------------------------

    async def login_page(self, request: web.Request) -> web.Response:
        target = _safe_next(request.query.get("next"))
        if await self.signed_in(request):
            raise web.HTTPSeeOther(target)
        return await _render("login.html", title="ceip: log in", next_url=target, error=None)

    async def login(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            return await _render("login.html", 403, title="ceip: log in", next_url=DASHBOARD,
                                 error="This login came from another site's page; log in here instead.")  # fmt: skip
        wait = self.throttle.retry_after()
        if wait > 0:
            response = await _render("login.html", 429, title="ceip: log in", next_url=DASHBOARD,
                                     error="Too many wrong tokens; try again in a minute.")  # fmt: skip
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        form: dict[str, list[str]] = {}
        if request.content_type == "application/x-www-form-urlencoded":  # what the login form sends
            form = parse_qs((await request.read()).decode("utf-8", "replace"))
        given, target = form.get("token", [""])[0], _safe_next(form.get("next", [""])[0])
        if not matches(given, self.token):
            self.throttle.failed()
            error = "That is not the query token. Try again."
            return await _render("login.html", 401, title="ceip: log in", next_url=target, error=error)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            sessions.COOKIE,
            sessions.issue(self.token, await session_epoch(self.storage)),
            max_age=sessions.SESSION_TTL_S,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        if not same_origin(request):
            raise web.HTTPForbidden(text="a logout must come from the dashboard's own page")
        if await self.signed_in(request):  # a copy of the cookie must stop working too, on every worker
            await self.storage.end_sessions()
        response = web.HTTPSeeOther(LOGIN)
        response.del_cookie(sessions.COOKIE, path="/")
        raise response

    # -- pages ------------------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        if not await self.signed_in(request):
            raise web.HTTPSeeOther(f"{LOGIN}?next={quote(request.path_qs, safe='')}")
        context: dict[str, Any] = {"title": "ceip dashboard", "signed_in": True, "error": None, "index": None}
        status, view = 200, None
        try:
            view = View.parse(request.query, self.today())
            context["title"] = f"ceip: {view.product}" if view.product else context["title"]
            context |= await (self._product(view) if view.product else self._index(view))
        except queries.QueryError as exc:
            context |= {"nav": self._nav(None), "error": str(exc)}
            status = 400
        except StorageUnavailable:
            message = "The database is unavailable right now; reload the page in a moment."
            context |= {"nav": self._nav(view), "error": message}
            status = 503
        return await _render("dashboard.html", status, **context)

    def _nav(self, view: View | None) -> list[dict[str, Any]]:
        """Product navigation."""
        if view is None:
            return [{"href": DASHBOARD, "label": "All products", "current": False}]
        items = [{"href": panels.link(DASHBOARD, view.params(product=None, version=None)), "label": "All products",
                  "current": view.product is None}]  # fmt: skip
        for product in self.products:
            href = panels.link(DASHBOARD, view.params(product=product, version=None))
            items.append({"href": href, "label": product, "current": product == view.product})
        return items

    def _range_form(self, view: View, versions: list[str]) -> dict[str, Any]:
        until = self.today()
        quick = [
            {"days": days, "href": panels.link(DASHBOARD, view.params(since=queries.day_text(until - days + 1),
                                                                     until=queries.day_text(until)))}
            for days in QUICK_DAYS
        ]  # fmt: skip
        return {
            "action": DASHBOARD,
            "product": view.product or "",
            "version": view.version,
            "versions": versions,
            "since": queries.day_text(view.since),
            "until": queries.day_text(view.until),
            "quick": quick,
        }

    async def _ask(self, name: str, filters: queries.Filters) -> dict[str, Any]:
        return await queries.QUERIES[name](self.storage, filters, self.k)

    async def _index(self, view: View) -> dict[str, Any]:
        """Every allowlisted product side by side: machines per day, opt-outs, the top problems across them."""
        filters = view.filters
        answers = {name: await self._ask(name, filters) for name in ("versions", "participation", "problems")}
        hrefs = {p: panels.link(DASHBOARD, view.params(product=p)) for p in self.products}

        def api(name: str) -> str:
            return panels.link(f"/v1/query/{name}", view.params())

        days = view.days
        built = await asyncio.to_thread(
            lambda: {
                "first_day": days[0],
                "last_day": days[-1],
                "overview": panels.overview(answers["participation"], answers["versions"], self.products, days,
                                            hrefs, api("participation")),
                "problems": panels.top_problems(answers["problems"], answers["versions"], hrefs, api("problems")),
                "privacy": panels.privacy(answers, self.k),
            }
        )  # fmt: skip
        return {"nav": self._nav(view), "form": self._range_form(view, []), "index": built}

    async def _product(self, view: View) -> dict[str, Any]:
        """A product's page: every panel, for the view's version and range."""
        filters = view.filters
        every_version = await self._ask("versions", attrs.evolve(filters, version=None))
        versions = [r["version"] for r in every_version["versions"] if r["version"] is not None]
        names = ("problems", "trends", "problem_versions", "features", "config", "timings", "participation")
        answers = {name: await self._ask(name, filters) for name in names}
        answers["versions"] = every_version

        def api(name: str) -> str:
            return panels.link(f"/v1/query/{name}", view.params())

        shown = [r for r in every_version["versions"] if r["version"] == view.version]
        active = shown[0]["machines"] if shown else None
        optouts = sum(r["requests"] for r in answers["participation"]["deletions"])
        days = view.days
        too_few = None if active is not None else f"{view.product} {view.version or ''}".strip()

        def build() -> dict[str, Any]:
            privacy = panels.privacy(answers, self.k, too_few)
            return {
                "name": view.product,
                "version": view.version,
                "first_day": days[0],
                "last_day": days[-1],
                "privacy": privacy,
                "summary": panels.summary(active, len(answers["problems"]["problems"]), optouts, self.k,
                                          privacy["total"]),
                "problems": panels.problems(answers["problems"], answers["trends"], days, api("problems")),
                "problem_versions": panels.problem_versions(answers["problem_versions"], api("problem_versions")),
                "features": panels.features(answers["features"], api("features")),
                "config": panels.config(answers["config"], api("config")),
                "performance": panels.performance(answers["timings"], api("timings")),
                "participation": panels.participation(answers["participation"], days, api("participation")),
            }  # fmt: skip

        # The panels are built in a worker thread too: their cost grows with what is stored.
        built = await asyncio.to_thread(build)
        return {"nav": self._nav(view), "form": self._range_form(view, versions), "product": built}


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
