"""Seeded data for the dashboard tests: shapes a person must be able to tell apart at a glance."""

from __future__ import annotations

import uuid
from typing import Any

from service.factory import GZIP, body, deletion, report

#: Client-supplied text that must reach the page as text, never as markup.
SCRIPT_SIGNATURE = "<script>alert(1)</script>"


def machines(n: int, start: int) -> list[str]:
    return [str(uuid.UUID(int=start + i, version=4)) for i in range(n)]


def seeded() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Reports and deletion requests of product ``sample``, 115 machines (k = 5 applies):

    - ``Common@many.py:2``: 100 machines, once each; ``Noisy@one.py:1``: 6 machines, 100 times each;
      the script signature: 5 machines; ``Rare@x.py:9``: 4 machines (under k: never shown);
    - ``open_file`` used on 75 machines (60 of the ``Common`` ones, and every other one);
    - ``render_ms`` timings in versions 1.0 and 2.0 (2.0 slower); 11 machines run 2.0;
    - two of the ``Common`` machines that used ``open_file`` asked for deletion: they are gone from every
      number (98 machines had ``Common``, 73 used ``open_file``, 113 are active).
    """
    many, noisy, scripted, rare = machines(100, 1), machines(6, 200), machines(5, 300), machines(4, 400)
    slow = [0] * 40 + [10]  # bucket 40: about 1 s
    slower = [0] * 44 + [10]  # bucket 44: about 2 s
    items = [
        report(g, problems={"Common@many.py:2": 1}, counters={"open_file": 1} if i < 60 else {"tag": 1},
               timings={"render_ms": slow}, os="Windows" if i % 2 else "Linux")
        for i, g in enumerate(many)
    ]  # fmt: skip
    items += [report(g, problems={"Noisy@one.py:1": 100}, version="2.0", timings={"render_ms": slower}) for g in noisy]
    items += [report(g, problems={SCRIPT_SIGNATURE: 1}, version="2.0", timings={"render_ms": slower}) for g in scripted]
    items += [report(g, problems={"Rare@x.py:9": 1}) for g in rare]
    gone = [many[0], many[1]]
    return items, [deletion(g) for g in gone]


async def seed(client: Any) -> None:
    """Send the seeded data through ``POST /v1/reports`` and ``/v1/deletions`` of a test client."""
    items, deletions = seeded()
    for start in range(0, len(items), 100):
        response = await client.post("/v1/reports", data=body(*items[start : start + 100]), headers=GZIP)
        assert response.status == 200
    response = await client.post("/v1/deletions", data=body(*deletions), headers=GZIP)
    assert response.status == 200
