"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright), on a real service
on loopback, on SQLite and on PostgreSQL: log in, compare the products, open one, read the numbers a person
would read.

Skipped where Chromium or Playwright is missing, except in CI (``CI`` set), where that is a failure:
``.ci/run`` installs both. A screenshot of each page (login, all products, a product, one version) is saved
in the test's temporary folder, or in ``CEIP_SCREENSHOTS=folder`` to keep them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from helpers import unavailable
from service.dashboard_data import SCRIPT_SIGNATURE, seed
from service.factory import TOKEN, auth, config

from ceip_core.service.app import make_app

CHROMIUM = "/usr/bin/chromium"
#: Flags that work in a container without a display, a GPU or a network.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"no {CHROMIUM}: apt-get install chromium chromium-driver"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "no playwright: pip install -e '.[test]'"
    return None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    """A headless Chromium with a fresh profile, for one test."""
    missing = _missing()
    if missing:
        unavailable(missing)
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        try:
            yield chromium
        finally:
            await chromium.close()
            shutil.rmtree(tmp_path / "profile", ignore_errors=True)


async def test_log_in_open_a_product_and_read_its_numbers(
    aiohttp_client: Any, database: str, browser: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    client = await aiohttp_client(make_app(attrs.evolve(config(), k=5), database, TOKEN))
    await seed(client)
    base = f"http://127.0.0.1:{client.server.port}"
    api = await (await client.get("/v1/query/problems?product=sample", headers=auth())).json()
    dialogs: list[str] = []
    page = await browser.new_page()
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))

    store = request.node.callspec.params["database"]
    shots = Path(os.environ.get("CEIP_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    async def screenshot(name: str) -> None:
        shot = shots / f"dashboard-{store}-{name}.png"
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000  # a page was drawn, not a blank
        print(f"screenshot: {shot}")

    # Not logged in: the dashboard sends the browser to the login page.
    await page.goto(f"{base}/dashboard?product=sample")
    assert page.url.startswith(f"{base}/dashboard/login?next=")
    await screenshot("login")
    await page.fill("input[name=token]", "wrong")
    await page.click("button[type=submit]")
    assert await page.locator(".error").inner_text() == "That is not the query token. Try again."
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await page.wait_for_url(f"{base}/dashboard?product=sample")

    # The top problem row: rank 1, its signature, a bar and the number of machines, the occurrences.
    top = page.locator("tr.problem").first
    assert await top.locator("td.rank").inner_text() == "1"
    assert await top.locator("td.signature code").inner_text() == api["problems"][0]["signature"] == "Common@many.py:2"
    assert await top.locator("td.machines .n").inner_text() == str(api["problems"][0]["machines"]) == "98"
    assert await top.locator("td.machines svg").get_attribute("aria-label") == "98 machines"
    assert (await top.locator("td.occurrences .n").inner_text()) == "98"
    noisy = page.locator("tr.problem").nth(1)
    assert await noisy.locator("td.machines .n").inner_text() == "6"  # few machines, a short bar ...
    assert await noisy.locator("td.occurrences .n").inner_text() == "600"  # ... many occurrences
    # The script-like signature is shown as text, and nothing ran.
    assert await page.locator("tr.problem").nth(2).locator("td.signature code").inner_text() == SCRIPT_SIGNATURE
    assert dialogs == []

    # A chart: today's column of active machines says what the API says.
    participation = await (await client.get("/v1/query/participation?product=sample", headers=auth())).json()
    today = participation["active"][-1]
    column = page.locator(f'svg.columns.active rect.col[data-day="{today["day"]}"]')
    assert await column.get_attribute("data-value") == str(today["active_machines"]) == "113"
    assert await column.locator("title").text_content() == f"{today['day']}: 113 machines"
    assert await page.locator("svg.hbars").count() > 5 and await page.locator("svg.ranges").count() == 1
    assert await page.locator(".tile.active .value").inner_text() == "113"

    # Problems by version: the common problem is on 1.0 only, the noisy one on 2.0 only.
    common = page.locator('.version-problem[data-signature="Common@many.py:2"] g.version-row')
    assert [await r.get_attribute("data-version") for r in await common.all()] == ["1.0", "2.0"]
    assert await common.nth(0).locator("text.value").text_content() == "96% · 98 of 102"
    assert await common.nth(1).locator("text.value").text_content() == "0% · 0 of 11"
    # What k-anonymity hid is said on the page, with why.
    hidden = page.locator("#privacy li[data-query=problems]")
    assert await hidden.inner_text() == "1 problem(s)"
    assert "k = 5" in await page.locator("#privacy p.why").inner_text()
    await screenshot("product")

    await page.goto(f"{base}/dashboard?product=sample&version=2.0")
    assert await page.locator(".tile.active .value").inner_text() == "11"
    await screenshot("version")

    # All products: machines per day, one line per product, and the top problems across products.
    await page.click("nav.products a >> text=All products")
    await page.wait_for_url(f"{base}/dashboard?*")
    line = page.locator('svg.lines g.series[data-series="sample"] circle')
    assert await line.count() == len(participation["active"])  # a point per day of at least k machines
    assert await line.last.locator("title").text_content() == f"sample, {today['day']}: 113 machines"
    top = page.locator("tr.top-problem").first
    assert await top.get_attribute("data-signature") == "Common@many.py:2"
    assert await top.locator("td.machines .n").inner_text() == "87%"  # 98 of sample's 113 machines
    await screenshot("products")

    # Logging out ends the session: the next page view asks for the token again.
    await page.click("form.logout button")
    await page.wait_for_url(f"{base}/dashboard/login")
    await page.goto(f"{base}/dashboard?product=sample")
    assert page.url.startswith(f"{base}/dashboard/login?next=")
