"""The dashboard over HTTP, on SQLite and PostgreSQL: login and sessions, the same numbers as the query API,
k-anonymity, escaping of client-supplied text, and bad input answered with a page, never a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from service.dashboard_data import SCRIPT_SIGNATURE, seed
from service.factory import GZIP, TOKEN, auth, body, declaring, report
from service.page import elements
from yarl import URL

from ceip_core.service import panels, queries, sessions
from ceip_core.service.app import DASHBOARD
from ceip_core.service.dashboard import LoginThrottle


def week() -> str:
    """The last seven days up to today, computed when asked: a module-level "today" goes stale at midnight."""
    today = datetime.now(UTC).date()
    return f"product=sample&since={(today - timedelta(days=6)).isoformat()}&until={today.isoformat()}"


async def login(client: Any, token: str = TOKEN, next_url: str = "/dashboard") -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await client.post(
        "/dashboard/login", data={"token": token, "next": next_url}, allow_redirects=False
    )
    return response


async def signed_in(client: Any) -> None:
    response = await login(client)
    assert response.status == 303
    client.session.cookie_jar.update_cookies({sessions.COOKIE: response.cookies[sessions.COOKIE].value})


async def page(client: Any, query: str | None = None) -> str:
    query = week() if query is None else query
    response = await client.get(f"/dashboard?{query}", allow_redirects=False)
    assert response.status == 200, await response.text()
    text: str = await response.text()
    return text


async def send_other(client: Any, n: int) -> None:
    """``n`` machines of product ``other``, each with the same problem."""
    items = [report(product="other", problems={"Other@o.py:1": 1}) for _ in range(n)]
    assert (await client.post("/v1/reports", data=body(*items), headers=GZIP)).status == 200


async def api(client: Any, what: str, query: str | None = None) -> dict[str, Any]:
    query = week() if query is None else query
    response = await client.get(f"/v1/query/{what}?{query}", headers=auth())
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


# -- login ------------------------------------------------------------------------------------------------


async def test_pages_need_a_login_and_the_login_page_trades_the_token_for_a_cookie(client: Any) -> None:
    for path in ("/dashboard", f"/dashboard?{week()}"):
        response = await client.get(path, allow_redirects=False)
        assert response.status == 303
        location = URL(response.headers["Location"])
        assert location.path == "/dashboard/login" and location.query["next"] == path
    assert (await client.get("/", allow_redirects=False)).headers["Location"] == "/dashboard"
    login_page = await client.get("/dashboard/login")
    assert login_page.status == 200 and 'name="token"' in await login_page.text()
    assert "script-src" not in login_page.headers["Content-Security-Policy"]  # default-src 'none': no script runs

    wrong = await login(client, token="not-the-token")
    assert wrong.status == 401 and sessions.COOKIE not in wrong.cookies
    assert "not the query token" in await wrong.text()

    right = await login(client, next_url=f"/dashboard?{week()}")
    assert right.status == 303 and right.headers["Location"] == f"/dashboard?{week()}"
    cookie = right.cookies[sessions.COOKIE]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert int(cookie["max-age"]) == sessions.SESSION_TTL_S
    assert TOKEN not in cookie.value  # the cookie never carries the token
    client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie.value})
    assert (await client.get(f"/dashboard?{week()}", allow_redirects=False)).status == 200
    assert (await client.get("/v1/query/problems")).status == 200  # the session opens the JSON too

    out = await client.post("/dashboard/logout", allow_redirects=False)
    assert out.status == 303 and out.headers["Location"] == "/dashboard/login"
    assert out.cookies[sessions.COOKIE].value == ""


async def test_a_login_never_redirects_to_another_site(client: Any) -> None:
    for target in (
        "https://evil.example/",
        "//evil.example/dashboard",
        "/v1/query/problems",
        "javascript:x",
        "/dashboard\r\nSet-Cookie: x=1",
    ):
        assert (await login(client, next_url=target)).headers["Location"] == "/dashboard"


async def test_forged_expired_and_malformed_cookies_are_refused(client: Any) -> None:
    now = datetime.now(UTC).timestamp()
    good = sessions.issue(TOKEN, 0)
    expiry, epoch, nonce, mac = good.split(".")
    refused = [
        sessions.issue("another-token", 0),  # signed with another service's token
        sessions.issue(TOKEN, 0, now=now - sessions.SESSION_TTL_S - 1),  # expired
        sessions.issue(TOKEN, 1),  # of another session epoch
        f"{int(expiry) + 3600}.{epoch}.{nonce}.{mac}",  # a later expiry, same signature
        f"{expiry}.{epoch}.{nonce}.{'0' * len(mac)}",
        f"{expiry}.{nonce}.{mac}",  # the shape of the first version's cookies
        "", "garbage", "a.b.c.d", "1.2", "ü.ö.ä.ë", "9" * 400 + ".0.x.y",
    ]  # fmt: skip
    assert sessions.valid(good, TOKEN, 0)
    for cookie in refused:
        assert not sessions.valid(cookie, TOKEN, 0), cookie
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        assert (await client.get("/dashboard", allow_redirects=False)).status == 303
        assert (await client.get("/v1/query/problems")).status == 401


async def test_a_login_form_of_any_shape_is_a_wrong_token_not_an_error(client: Any) -> None:
    for data, headers in (
        (b"\xff\xfe", {"Content-Type": "application/x-www-form-urlencoded"}),
        (b'{"token": "test-token-00000001"}', {"Content-Type": "application/json"}),
        (b"", {}),
        (b"token=" + b"x" * 100_000, {"Content-Type": "application/x-www-form-urlencoded"}),
    ):
        response = await client.post("/dashboard/login", data=data, headers=headers, allow_redirects=False)
        assert response.status == 401, data[:20]


# -- what the pages show ----------------------------------------------------------------------------------


async def test_the_page_shows_the_query_apis_numbers(client: Any) -> None:
    await seed(client)
    await signed_in(client)
    html = await page(client)

    problems = (await api(client, "problems"))["problems"]
    rows = elements(html, "problem")
    assert [(a["data-signature"], int(a["data-machines"]), int(a["data-occurrences"])) for a, _ in rows] == [
        (p["signature"], p["machines"], p["occurrences"]) for p in problems
    ]
    assert [(p["signature"], p["machines"], p["occurrences"]) for p in problems] == [
        ("Common@many.py:2", 98, 98),
        ("Noisy@one.py:1", 6, 600),
        (SCRIPT_SIGNATURE, 5, 5),
    ]
    # rank, kind, signature, machines, occurrences; then versions affected
    assert rows[0][1].startswith("1 error Common@many.py:2 98 98 1 per machine")
    assert rows[1][1].endswith(" 2.0")

    features = (await api(client, "features"))["features"]
    shown_features = [
        (a["data-name"], int(a["data-machines"]), float(a["data-adoption"])) for a, _ in elements(html, "feature")
    ]
    assert shown_features == [(f["name"], f["machines"], f["adoption"]) for f in features]
    assert features[0]["name"] == "open_file" and (features[0]["machines"], features[0]["active_machines"]) == (73, 113)

    config = (await api(client, "config"))["config"]
    shown = {(a["data-key"], a["data-value"]): int(a["data-machines"]) for a, _ in elements(html, "row")}
    assert shown == {(c["key"], c["value"]): c["machines"] for c in config}
    assert shown["system.os", "Windows"] == 49  # every other one of the 100, less the deleted machine 1

    timings = (await api(client, "timings"))["timings"]
    shown_timings = [
        (a["data-version"], float(a["data-p50"]), int(a["data-machines"])) for a, _ in elements(html, "timing")
    ]
    assert shown_timings == [(t["version"], t["p50"], t["machines"]) for t in timings]
    assert timings[1]["p50"] > timings[0]["p50"]  # 2.0 is slower: the regression is on the page

    participation = await api(client, "participation")
    columns = [(a["data-day"], a["data-value"]) for a, _ in elements(html, "col")]
    active, optouts = columns[:7], columns[7:]  # a column per day of the 7-day range, in each chart
    assert {day: int(n) for day, n in active if n} == {r["day"]: r["active_machines"] for r in participation["active"]}
    deletions = {r["day"]: r["requests"] for r in participation["deletions"]}
    assert {day: int(n) for day, n in optouts if n != "0"} == deletions
    tiles = {a["class"]: text for a, text in elements(html, "tile")}
    assert tiles["tile active"] == "Active machines 113" and tiles["tile optouts"] == "Opt-outs 2"


async def test_every_number_respects_k_and_client_text_stays_text(client: Any) -> None:
    await seed(client)
    await signed_in(client)
    html = await page(client)
    assert "Rare@x.py:9" not in html  # 4 machines: hidden, only counted
    assert "1 group(s) of fewer than 5 machines hidden" in html
    assert SCRIPT_SIGNATURE not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    signature = [t for a, t in elements(html, "problem") if a["data-signature"] == SCRIPT_SIGNATURE]
    assert signature and SCRIPT_SIGNATURE in signature[0]  # shown as the text it is
    # A version of fewer than k machines is not offered, and a group of one version under k is hidden.
    version_two = await page(client, week() + "&version=2.0")
    assert [a["data-signature"] for a, _ in elements(version_two, "problem")] == ["Noisy@one.py:1", SCRIPT_SIGNATURE]
    assert 'option value="2.0"' in html and 'option value="1.0"' in html


@pytest.mark.parametrize(
    ("query", "status", "says"),
    [
        ("product=sample&since=yesterday", 400, "since=&#39;yesterday&#39;"),
        ("product=sample&since=2020-01-01&until=2026-01-01", 400, "longer than 400 days"),
        ("product=sample&since=2026-02-02&until=2026-01-01", 400, "since is after until"),
        ("product=sample&until=2026-13-45", 400, "expected a date"),
        ("product=sample&until=9999-12-31T23:00:00-14:00", 400, "expected a day from 1970-01-01"),
        ("product=sample&since=0001-01-01T00:00:00%2B01:00", 400, "expected a day from 1970-01-01"),
        ("product=sample&since=9999-12-30", 400, "since is after until"),
        ("product=%3Cb%3Enope", 200, "&lt;b&gt;nope"),
        ("product=sample&version=%00", 400, "without NUL"),
        ("product=" + "x" * 256, 400, "at most 255 characters"),
        ("product=sample&version=9.9", 200, "No problems in this range"),
        ("", 200, "Products"),
    ],
)
async def test_bad_or_odd_parameters_get_a_page_not_an_error(client: Any, query: str, status: int, says: str) -> None:
    await signed_in(client)
    response = await client.get(f"/dashboard?{query}", allow_redirects=False)
    assert response.status == status
    assert says in await response.text()


@pytest.mark.parametrize(
    "query", ["until=9999-12-31T23:00:00-14:00", "since=0001-01-01T00:00:00%2B01:00", "since=9999-12-31"]
)
async def test_dates_out_of_range_are_a_bad_query_not_an_error(client: Any, query: str) -> None:
    for what in queries.QUERIES:
        response = await client.get(f"/v1/query/{what}?{query}", headers=auth())
        assert response.status == 400, what
        assert (await response.json())["error"] == "bad-query"


async def test_the_product_list_links_every_allowlisted_product(client: Any) -> None:
    await seed(client)
    await signed_in(client)
    html = await page(client, "")
    products = {a["data-product"]: a["data-machines"] for a, _ in elements(html, "product")}
    assert products == {"other": "", "sample": "113"}  # 'other' has no machines: nothing to show


async def test_the_products_page_compares_products_at_a_glance(client: Any) -> None:
    await seed(client)
    await send_other(client, 7)
    await signed_in(client)
    html = await page(client, "")
    assert [a["data-series"] for a, _ in elements(html, "series")] == ["other", "sample"]  # a line per product
    participation = await api(client, "participation", "")
    points = re.findall(r"<title>(other|sample), (\d{4}-\d\d-\d\d): (\d+) machines</title>", html)
    assert sorted(points) == sorted(
        (r["product"], r["day"], str(r["active_machines"])) for r in participation["active"]
    )
    rows = {a["data-product"]: text for a, text in elements(html, "product")}
    assert rows == {"other": "other 7 0", "sample": "sample 113 2"}  # active machines, opt-outs
    problems = (await api(client, "problems", ""))["problems"]
    top = [(a["data-product"], a["data-signature"], int(a["data-machines"])) for a, _ in elements(html, "top-problem")]
    assert top == [(p["product"], p["signature"], p["machines"]) for p in problems]
    assert top[:2] == [("sample", "Common@many.py:2", 98), ("other", "Other@o.py:1", 7)]  # 87% of 113, 100% of 7
    shares = [text.split()[-3] for _, text in elements(html, "top-problem")[:2]]
    assert shares == ["87%", "100%"]  # a small product's problem compares fairly


async def test_problems_by_version_show_the_query_apis_numbers(client: Any) -> None:
    await seed(client)
    await signed_in(client)
    html = await page(client)
    answer = await api(client, "problem_versions")
    shown = [(a["data-version"], a["data-machines"], int(a["data-active"])) for a, _ in elements(html, "version-row")]
    assert shown == [
        (r["version"], "" if r["machines"] is None else str(r["machines"]), r["active_machines"])
        for r in answer["problem_versions"]
    ]
    assert shown[:2] == [("1.0", "98", 102), ("2.0", "0", 11)]  # Common@many.py:2 is on 1.0 only


async def test_the_page_says_what_k_anonymity_hid_and_why(client: Any) -> None:
    await seed(client)
    await signed_in(client)
    html = await page(client)
    hidden = {a["data-query"]: int(a["data-hidden"]) for a, _ in elements(html, "hidden-group")}
    for query in ("problems", "trends", "problem_versions", "features", "config", "timings", "participation"):
        assert hidden.get(query, 0) == (await api(client, query))["hidden"], query
    assert hidden["problems"] == 1  # Rare@x.py:9, of 4 machines
    assert "Some groups in this range have fewer than 5 machines" in html and "k = 5" in html
    tiles = {a["class"]: text for a, text in elements(html, "tile")}
    assert tiles["tile k"] == f"k-anonymity (k = 5) {sum(hidden.values())} group(s) under 5 machines hidden"

    # One machine alone (a newcomer's own): nothing of it is published, and the page says why.
    await send_other(client, 1)
    alone = await page(client, "product=other")
    assert "Fewer than 5 machines used other in this range, so nothing about them is published here." in alone
    assert "No problems in this range" in alone and "Other@o.py:1" not in alone


async def test_a_page_lists_the_top_problems_and_points_to_the_rest(client: Any) -> None:
    fleet = [report(problems={f"E{i}@x.py:{i}": 1 for i in range(panels.MAX_PROBLEMS + 2)}) for _ in range(5)]
    assert (await client.post("/v1/reports", data=body(*fleet), headers=GZIP)).status == 200
    await signed_in(client)
    html = await page(client)
    assert len(elements(html, "problem")) == panels.MAX_PROBLEMS
    assert [t for _, t in elements(html, "more")] == ["2 more problem(s), ranked lower: see the JSON ."]


async def test_a_sender_of_thousands_of_names_gets_bounded_panels(make_client: Any) -> None:
    """A product that declares thousands of names cannot make a page long (or slow): every panel is capped.
    (Names a sender invents do not get this far: the service drops what no declaration names.)"""
    names = 1000
    client = await make_client(
        declaring(
            counters=[f"c{i}" for i in range(names)],
            configs=[f"setting_{i}" for i in range(names // 10)],
            histograms=[f"t{i}_ms" for i in range(names // 10)],
        )
    )
    fleet = [
        report(
            counters={f"c{i}": 1 for i in range(names)},
            config={f"setting_{i}": "x" for i in range(names // 10)},
            timings={f"t{i}_ms": [1, 2] for i in range(names // 10)},
        )
        for _ in range(5)
    ]
    assert (await client.post("/v1/reports", data=body(*fleet), headers=GZIP)).status == 200
    await signed_in(client)
    html = await page(client)
    assert len(elements(html, "feature")) == panels.MAX_FEATURE_ROWS
    assert len(elements(html, "metric")) == panels.MAX_METRICS
    assert len({a["data-key"] for a, _ in elements(html, "row")}) == panels.MAX_CONFIG_KEYS
    more = [t for _, t in elements(html, "more")]
    assert f"{names - panels.MAX_FEATURE_ROWS} more feature row(s), ranked lower: see the JSON ." in more
    assert f"{names // 10 - panels.MAX_METRICS} more metric(s), ranked lower: see the JSON ." in more
    assert any(t.endswith("more configuration field(s), ranked lower: see the JSON .") for t in more)


# -- forms and sessions -----------------------------------------------------------------------------------


async def test_logout_ends_a_copied_session_on_every_worker(make_client: Any) -> None:
    """Two services on one database (two workers): a cookie copied before logout stops working on both."""
    first, second = await make_client(), await make_client()
    cookie = (await login(first)).cookies[sessions.COOKIE].value
    for client in (first, second):
        client.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})
        assert (await client.get("/dashboard", allow_redirects=False)).status == 200
    assert (await first.post("/dashboard/logout", allow_redirects=False)).status == 303
    second.session.cookie_jar.update_cookies({sessions.COOKIE: cookie})  # the copy, still sent
    assert (await second.get("/dashboard", allow_redirects=False)).status == 303
    assert (await second.get("/v1/query/problems")).status == 401
    again = (await login(second)).cookies[sessions.COOKIE].value  # a new login works everywhere
    first.session.cookie_jar.update_cookies({sessions.COOKIE: again})
    assert (await first.get("/dashboard", allow_redirects=False)).status == 200


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "https://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
     {"Sec-Fetch-Site": "same-site"}],
)  # fmt: skip
async def test_login_and_logout_refuse_a_post_from_another_site(client: Any, headers: dict[str, str]) -> None:
    form = {"token": TOKEN, "next": "/dashboard"}
    refused = await client.post("/dashboard/login", data=form, headers=headers, allow_redirects=False)
    assert refused.status == 403 and sessions.COOKIE not in refused.cookies
    await signed_in(client)
    assert (await client.post("/dashboard/logout", headers=headers, allow_redirects=False)).status == 403
    assert (await client.get("/dashboard", allow_redirects=False)).status == 200  # still signed in


async def test_a_login_from_the_services_own_page_is_accepted(client: Any) -> None:
    own = {"Origin": f"http://{client.host}:{client.port}", "Sec-Fetch-Site": "same-origin"}
    form = {"token": TOKEN, "next": "/dashboard"}
    assert (await client.post("/dashboard/login", data=form, headers=own, allow_redirects=False)).status == 303


async def test_failed_logins_are_throttled_then_allowed_again(client: Any) -> None:
    now = [1000.0]
    client.server.app[DASHBOARD].throttle = LoginThrottle(limit=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert (await login(client, token="wrong")).status == 401
    throttled = await login(client)  # even the right token waits: the throttle does not tell them apart
    assert throttled.status == 429 and 1 <= int(throttled.headers["Retry-After"]) <= 60
    now[0] += 61
    assert (await login(client)).status == 303


async def test_json_answers_carry_the_security_headers(client: Any) -> None:
    for path in ("/v1/query/problems", "/healthz", "/v1/query/nope"):
        response = await client.get(path, headers=auth())
        assert response.headers["X-Content-Type-Options"] == "nosniff", path
        assert response.headers["Cache-Control"] == "no-store", path
        assert "default-src 'none'" in response.headers["Content-Security-Policy"], path
        assert "Strict-Transport-Security" not in response.headers  # plain HTTP: HSTS would mean nothing
