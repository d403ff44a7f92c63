"""Operators see the database: ``GET /metrics`` (Prometheus text, behind the query token) and ``ceip report storage``
give its size, rows per table, the fold backlog and lag, the quarantine and the counters, on both stores."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from click.testing import CliRunner
from service.factory import GZIP, body, report

from ceip_core.cli import cli


async def test_metrics_need_the_token_and_show_the_database(client: Any, database: str) -> None:
    response = await client.post("/v1/reports", data=body(*(report() for _ in range(3))), headers=GZIP)
    assert response.status == 200
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401

    response = await client.get("/metrics", headers={"Authorization": "Bearer test-token-00000001"})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert samples['ceip_table_rows{table="reports"}'] == "3"
    assert float(samples["ceip_database_bytes"]) > 0
    assert {"ceip_quarantined_reports", "ceip_fold_lag_seconds", "ceip_tombstoned_reports_total"} <= set(samples)
    for line in text.splitlines():  # every line is a comment or a well-formed sample
        assert line.startswith("# ") or re.fullmatch(r'[a-z_]+(\{table="[a-z_]+"\})? [0-9.e+-]+', line), line

    command = ["report", "storage", "--db", database, "--json"]
    result = await asyncio.to_thread(CliRunner().invoke, cli, command, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert found["rows"]["reports"] == 3 and found["quarantined"] == 0 and found["bytes"] > 0
    result = await asyncio.to_thread(CliRunner().invoke, cli, command[:-1], catch_exceptions=False)
    assert "database size:" in result.output and "reports" in result.output
