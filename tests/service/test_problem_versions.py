"""The ``problem_versions`` query on real stores: a problem's machines per version beside that version's
machines, so a team sees whether a fix worked; k-anonymity per version; the same answer from the API and
``ceip report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from service.factory import body, report, specs_file
from service.test_queries import ask, machines, send

from ceip_core.cli import cli
from ceip_core.default_plugins.file_transport import write_atomically
from ceip_core.service.queries import _version_order


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def rows(answer: dict[str, Any]) -> list[tuple[str, str, int | None, int]]:
    return [(r["signature"], r["version"], r["machines"], r["active_machines"]) for r in answer["problem_versions"]]


async def test_a_fix_shows_as_a_version_whose_machines_no_longer_have_the_problem(client: Any) -> None:
    old, new = machines(10), machines(8)
    await send(
        client,
        *(report(g, problems={"Fixed@x.py:1": 1} if i < 7 else {}) for i, g in enumerate(old)),  # 7 of 10 on 1.0
        *(report(g, version="2.0", problems={"New@y.py:2": 1} if i < 6 else {}) for i, g in enumerate(new)),
    )
    answer = await ask(client, "problem_versions")
    assert rows(answer) == [
        ("Fixed@x.py:1", "1.0", 7, 10),
        ("Fixed@x.py:1", "2.0", 0, 8),  # none of the 2.0 machines: the fix worked
        ("New@y.py:2", "1.0", 0, 10),
        ("New@y.py:2", "2.0", 6, 8),  # brought by 2.0
    ]
    assert answer["problem_versions"][0]["share"] == 0.7 and answer["hidden"] == 0


async def test_a_version_where_fewer_than_k_machines_had_it_is_hidden_not_zero(client: Any) -> None:
    old, new, few = machines(10), machines(6), machines(3)
    await send(
        client,
        *(report(g, problems={"E@x.py:1": 1}) for g in old),
        *(report(g, version="2.0", problems={"E@x.py:1": 1} if i < 2 else {}) for i, g in enumerate(new)),
        *(report(g, version="3.0", problems={"E@x.py:1": 1}) for g in few),  # a version of 3 machines
    )
    answer = await ask(client, "problem_versions")
    assert rows(answer) == [("E@x.py:1", "1.0", 10, 10), ("E@x.py:1", "2.0", None, 6)]  # 3.0: under k, left out
    assert answer["problem_versions"][1]["share"] is None and answer["hidden"] == 1
    assert [r["version"] for r in (await ask(client, "problem_versions", "?version=2.0"))["problem_versions"]] == []


async def test_versions_come_in_release_order_and_problems_in_rank_order(client: Any) -> None:
    fleet = machines(12)
    await send(
        client,
        *(report(g, version="2.10", problems={"Top@x.py:1": 1}) for g in fleet[:6]),
        *(report(g, version="2.9", problems={"Top@x.py:1": 1, "Second@x.py:2": 1}) for g in fleet[6:]),
        *(report(g, version="2.9", problems={"Second@x.py:2": 1}) for g in machines(1)),
    )
    answer = await ask(client, "problem_versions")
    assert [(r["signature"], r["version"]) for r in answer["problem_versions"]] == [
        ("Top@x.py:1", "2.9"), ("Top@x.py:1", "2.10"), ("Second@x.py:2", "2.9"), ("Second@x.py:2", "2.10"),
    ]  # fmt: skip
    versions = ["3.0", "2.10", "2.9", "10.0", "2.10.1", "unknown"]
    assert sorted(versions, key=_version_order) == ["2.9", "2.10", "2.10.1", "3.0", "10.0", "unknown"]


def test_ceip_report_prints_it(tmp_path: Path, database: str) -> None:
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    folder = tmp_path / "bundle"
    write_atomically(folder, body(*(report(g, problems={"E@x.py:1": 1}) for g in machines(5))))
    common = ["--db", database, "--data", str(tmp_path)]
    assert (
        run(
            "import", str(folder), *common, "--allowlist", str(allowlist), "--specs", str(specs_file(tmp_path))
        ).exit_code
        == 0
    )
    answer = json.loads(run("report", "problem_versions", *common, "--json").stdout)
    assert rows(answer) == [("E@x.py:1", "1.0", 5, 5)]
    table = run("report", "problem_versions", *common).stdout
    assert "E@x.py:1" in table and "active_machines" in table
