"""``ceip demo``, as a newcomer runs it: the agent on the stand-ins, then a dashboard of a simulated fleet.

It runs with ``--no-wait`` (stop the service once the dashboard is ready); then the README's tour is played
on the demo's state folder (``ceip review`` shows what the demo queued), ``ceip serve`` is started again on
the demo's data, as the demo says to, and the dashboard is read over HTTP after logging in.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from helpers import unavailable, wait_for
from service.factory import free_port
from service.page import elements

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the agent observes Linux processes")


async def read_dashboard(base: str, token: str) -> tuple[str, str, dict[str, Any], dict[str, Any]]:
    """Log in like the login form does; the Analyst page, the products page, and the query API's problems
    and problems by version."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # unsafe: an IP host
        async with session.post(f"{base}/dashboard/login", data={"token": token, "next": "/dashboard"}) as login:
            assert login.status == 200 and login.url.path == "/dashboard"
        today = datetime.now(UTC).date()
        query = f"product=analyst&since={today - timedelta(days=29)}&until={today}"
        async with session.get(f"{base}/dashboard?{query}") as page:
            assert page.status == 200
            html = await page.text()
        async with session.get(f"{base}/dashboard") as page:
            assert page.status == 200
            products = await page.text()
        async with session.get(f"{base}/v1/query/problems?{query}") as answer:  # the session opens the API too
            problems = await answer.json()
        async with session.get(f"{base}/v1/query/problem_versions?{query}") as answer:
            return html, products, problems, await answer.json()


def test_the_demo_ends_with_a_dashboard_of_a_simulated_fleet(tmp_path: Path, ceip_home: Path) -> None:
    bindir = str(Path(sys.executable).parent)
    if not all(shutil.which(name, path=bindir) for name in ("analyst", "packager", "hub-server")):
        unavailable("the product plugins and their stand-ins are not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("CEIP_HOME", "CEIP_ALLOWLIST", "CEIP_SERVICE_TOKEN")}
    demo_home = tmp_path / "demo-home"
    command = [sys.executable, "-m", "ceip_core", "--home", str(demo_home), "demo", "--seconds", "1", "--no-wait"]
    began = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - began < 60
    out = proc.stdout
    assert "Opted in and allowlisted analyst, hub-server, packager" in out and "Traceback" not in proc.stderr
    # A short summary, not a dump: the URL and the token come within the first screenful.
    assert len(out[: out.index("Dashboard: ")].splitlines()) <= 15
    queued = re.search(r"^Queued on this machine: (\d+) item\(s\): .*See them: ceip --home (\S+) review", out, re.M)
    assert queued and int(queued[1]) >= 4 and Path(queued[2]) == demo_home.resolve()
    assert re.search(r"Sent [\d,]+ reports of 200 simulated machines over the last 30 days", out)
    assert re.search(r"Sent [1-9]\d* deletion request\(s\) of the simulated machines that opted out", out)
    assert re.search(rf"Sent a copy of this machine's {queued[1]} queued item\(s\): {queued[1]} accepted", out)
    assert "What fewer than k = 5 machines reported" in out
    assert re.search(r"^Dashboard: http://127\.0\.0\.1:\d+/dashboard$", out, re.MULTILINE)
    token = re.search(r"^Log in with the query token: (\S+)$", out, re.MULTILINE)
    assert token and (demo_home / "service" / "query-token").read_text().strip() == token[1]

    # The tour works as written after the demo: what was queued is still there to review.
    def ceip(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ceip_core", "--home", str(demo_home), *args], env=env,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    review = ceip("review")
    for product in ("analyst", "packager", "hub-server"):
        assert f"session   {product} " in review and f"== {product} ==" in review
    # At least: another test run on this machine may be playing the same products, and the agent sees them.
    assert review.count("ended crashed") >= 1 and review.count("ended normal") >= 3
    assert "Agent:          stopped at" in ceip("status")

    port = free_port()
    serve = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(demo_home / "service")]
    service = subprocess.Popen(serve, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), timeout=30)
        html, products, api, by_version = asyncio.run(read_dashboard(base, token[1]))
    finally:
        service.send_signal(signal.SIGTERM)
        service.wait(timeout=30)
    active = int(next(t for a, t in elements(html, "tile") if "active" in a["class"]).split()[-1].replace(",", ""))
    assert 150 <= active <= 201  # the simulated machines that use Analyst, and this one
    rows = [
        (a["data-signature"], int(a["data-machines"]), int(a["data-occurrences"])) for a, _ in elements(html, "problem")
    ]
    assert len(rows) >= 5 and rows[0][1] >= 50  # problems that hit many machines lead ...
    noisy = [r for r in rows if r[0].startswith("RecursionError@")]
    assert noisy and noisy[0][2] >= 10 * noisy[0][1]  # ... and one hits a few machines very often
    timings = {(a["data-name"], a["data-version"]): float(a["data-p50"]) for a, _ in elements(html, "timing")}
    assert timings["click_to_response_ms", "3.0"] > timings["click_to_response_ms", "2.4"]  # the regression
    assert rows == [(p["signature"], p["machines"], p["occurrences"]) for p in api["problems"]]
    tiles = {a["class"]: text for a, text in elements(html, "tile")}
    assert int(tiles["tile optouts"].split()[-1]) >= 1  # some simulated machines opted out
    # Problems by version tell a fix (the top problem, nearly gone in 3.0) and a problem 3.0 brought.
    share = {(r["signature"], r["version"]): r["share"] or 0.0 for r in by_version["problem_versions"]}
    top = api["problems"][0]["signature"]
    assert share[top, "3.0"] < share[top, "2.4"] / 3
    assert any(share[s, "3.0"] > 0 and share[s, "2.4"] == 0 for s, _ in share)
    assert len(elements(html, "version-problem")) >= 5
    assert [a["data-series"] for a, _ in elements(products, "series")] == ["analyst", "hub-server", "packager"]


def _healthy(base: str) -> bool:
    async def probe() -> bool:
        try:
            async with aiohttp.ClientSession() as session, session.get(f"{base}/healthz") as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    return asyncio.run(probe())
