"""The service's second pass: the published policy, the product's declaration and the client's scrubbers,
applied again before a report is stored (on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import ceip_sample
import orjson
import pytest
from ceip_sample import OTHER, SPEC
from click.testing import CliRunner
from helpers import wait_for
from service.factory import ALLOWLIST, GZIP, body, config, deletion, free_port, report, specs_file

import ceip_core
from ceip_core import wire
from ceip_core.cli import cli
from ceip_core.records import Category, MetricKind, MetricSpec
from ceip_core.service.app import STORAGE
from ceip_core.service.config import (
    AdmissionLimits,
    ConfigError,
    ConfigFiles,
    Declarations,
    LiveConfig,
    ProductPolicy,
    ServiceConfig,
)
from ceip_core.testing import queued_reports
from ceip_core.vendor_policy import machine_draw

K = 5
EMAIL = "bob.smith@example.com"


async def post(client: Any, *items: dict[str, Any]) -> list[dict[str, Any]]:
    response = await client.post("/v1/reports", data=body(*items), headers=GZIP)
    assert response.status == 200, await response.text()
    results: list[dict[str, Any]] = (await response.json())["results"]
    return results


async def ask(client: Any, what: str) -> dict[str, Any]:
    response = await client.get(f"/v1/query/{what}", headers={"Authorization": "Bearer test-token-00000001"})
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


async def counters(client: Any) -> dict[str, int]:
    counts: dict[str, int] = (await (await client.get("/readyz")).json())["ingest"]
    return counts


async def bodies(client: Any) -> list[dict[str, Any]]:
    rows = await client.server.app[STORAGE].query("SELECT body FROM reports", {})
    return [orjson.loads(row[0]) for row in rows]


# -- the declaration --------------------------------------------------------------------------------------


async def test_an_email_as_a_feature_name_and_an_undeclared_config_key_are_neither_stored_nor_served(
    client: Any,
) -> None:
    """The issue's hand-made report: an e-mail address as a feature name and ``owner_email`` in its
    configuration, from enough machines that the query API would publish them."""
    fleet = [
        report(counters={EMAIL: 3, "open_file": 1}, config={"theme": "dark", "owner_email": EMAIL}) for _ in range(K)
    ]
    assert {r["status"] for r in await post(client, *fleet)} == {"accepted"}  # fail closed on the fields only

    features, config_answer = await ask(client, "features"), await ask(client, "config")
    assert [f["name"] for f in features["features"]] == ["open_file"]
    assert "config.theme" in {row["key"] for row in config_answer["config"]}
    for answer in (features, config_answer):
        assert EMAIL not in orjson.dumps(answer).decode() and "owner_email" not in orjson.dumps(answer).decode()
    stored = await bodies(client)
    assert len(stored) == K
    for doc in stored:
        assert EMAIL not in orjson.dumps(doc).decode() and "owner_email" not in orjson.dumps(doc).decode()
        assert doc["diagnostics"] == {
            "service.scrub.declared.undeclared_config": 1,
            "service.scrub.declared.undeclared_counter": 1,
        }
    assert await counters(client) == {
        "scrubbed:declared.undeclared_config": K,
        "scrubbed:declared.undeclared_counter": K,
        "spec:none-named": K,
    }


async def test_the_identifier_scrubbers_run_again_and_count_what_they_replaced(client: Any) -> None:
    item = report(config={"theme": f"mine is {EMAIL}"}, problems={f"Err@x.py:1 mail {EMAIL}": 1})
    item["counters"].append({"name": "tag", "value": 2, "label": EMAIL})
    item["diagnostics"] = {"recorder.too_many_series": 1, EMAIL: 1}
    assert [r["status"] for r in await post(client, item)] == ["accepted"]

    [doc] = await bodies(client)
    text = orjson.dumps(doc).decode()
    assert EMAIL not in text and "<email>" in text
    assert {c["label"] for c in doc["counters"] if c["name"] == "tag"} == {"<email>"}
    assert doc["diagnostics"] == {
        "recorder.too_many_series": 1,  # the client's own counts stay as sent
        "service.scrub.diagnostics.invalid_key": 1,
        "service.scrub.identifiers.email": 3,
    }
    counts = await counters(client)
    assert counts["scrubbed:identifiers.email"] == 3 and counts["scrubbed:diagnostics.invalid_key"] == 1


async def test_a_report_is_checked_against_the_declaration_it_names(make_client: Any) -> None:
    """The service keeps every declaration it knows: a report of an older product version keeps the
    metric that version declared; a newer one, whose declaration dropped it, loses it."""
    legacy = MetricSpec("legacy", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Removed in 2.0.")
    old = attrs.evolve(SPEC, metrics=(*SPEC.metrics, legacy))
    client = await make_client(attrs.evolve(config(), declarations=Declarations.of([old], [SPEC, OTHER])))
    named_old = report(counters={"legacy": 1, "open_file": 1}) | {"spec_digest": wire.spec_digest(old)}
    named_new = report(counters={"legacy": 1, "open_file": 1}) | {"spec_digest": wire.spec_digest(SPEC)}
    unknown = report(counters={"legacy": 1, "open_file": 1}) | {"spec_digest": "0" * 32}
    old_client = report(counters={"legacy": 1, "open_file": 1})
    del old_client["spec_digest"]  # a client from before the field: still a valid report
    malformed = report() | {"spec_digest": EMAIL}
    results = await post(client, named_old, named_new, unknown, old_client, malformed)

    assert [r["status"] for r in results] == ["accepted"] * 4 + ["rejected"]
    assert results[4]["reason"] == "invalid" and "spec_digest" in results[4]["detail"]
    kept = {doc["report_id"]: {c["name"] for c in doc["counters"]} for doc in await bodies(client)}
    assert kept == {
        named_old["report_id"]: {"legacy", "open_file"},
        named_new["report_id"]: {"open_file"},
        unknown["report_id"]: {"open_file"},  # the current declaration applies
        old_client["report_id"]: {"open_file"},
    }
    counts = await counters(client)
    assert counts["spec:unknown"] == 1 and counts["spec:none-named"] == 1 and counts["rejected:invalid"] == 1


async def test_a_product_without_a_declaration_is_refused(make_client: Any) -> None:
    client = await make_client(attrs.evolve(config(), declarations=Declarations.of([], [SPEC])))
    [result] = await post(client, report(product="other", counters={"used": 1}))
    assert (result["status"], result["reason"]) == ("rejected", "undeclared-product")


async def test_a_report_sealed_by_the_client_is_stored_exactly_as_sent(
    client: Any, ceip_participating: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One implementation at both ends: what the client's pipeline let through, the service's lets through
    unchanged, under the declaration the report names."""
    monkeypatch.delenv("CEIP_SERVICE_URL", raising=False)
    spool = ceip_participating(ceip_sample, "sample")
    with ceip_core.recorder("sample", "2.1") as rec:
        rec.feature("export", "pdf")
        rec.feature("tag", EMAIL)
        rec.problem(f"ValueError@render.py:88 {EMAIL}")
        rec.config("theme", "dark")
    [sealed] = queued_reports(spool)
    assert sealed["spec_digest"] == wire.spec_digest(SPEC)

    assert [r["status"] for r in await post(client, sealed)] == ["accepted"]
    [doc] = await bodies(client)
    assert doc == sealed
    assert await counters(client) == {}


# -- the policy ---------------------------------------------------------------------------------------------


def with_policy(**policy: ProductPolicy) -> ServiceConfig:
    return attrs.evolve(config(), policy=policy)


async def test_reports_under_sample_rate_zero_are_refused_and_not_stored(make_client: Any) -> None:
    client = await make_client(with_policy(sample=ProductPolicy(sample_rate=0.0)))
    results = await post(client, *(report() for _ in range(10)))
    assert {(r["status"], r["reason"]) for r in results} == {("rejected", "sampled-out")}
    assert await bodies(client) == []
    assert (await counters(client))["rejected:sampled-out"] == 10


async def test_the_kill_switch_refuses_reports_but_deletions_still_go_through(make_client: Any) -> None:
    client = await make_client(with_policy(sample=ProductPolicy(enabled=False)))
    item = report()
    [result] = await post(client, item)
    assert (result["status"], result["reason"]) == ("rejected", "disabled-by-vendor")
    response = await client.post("/v1/deletions", data=body(deletion(item["guid"])), headers=GZIP)
    assert [r["status"] for r in (await response.json())["results"]] == ["accepted"]


async def test_sampling_keeps_exactly_the_machines_the_client_keeps(make_client: Any) -> None:
    """The sample is of machines, decided by the client's own ``machine_draw``: a machine in it is kept
    whatever it sends, one outside is refused every time."""
    client = await make_client(with_policy(sample=ProductPolicy(sample_rate=0.5)))
    guids = [str(uuid.UUID(int=i + 1, version=4)) for i in range(40)]
    inside = {g for g in guids if machine_draw(g, "sample") < 0.5}
    assert 0 < len(inside) < len(guids)
    for _ in range(2):
        results = await post(client, *(report(g) for g in guids))
        assert {g for g, r in zip(guids, results, strict=True) if r["status"] == "accepted"} == inside
        assert {r.get("reason") for r in results if r["status"] == "rejected"} == {"sampled-out"}


# -- reloading ----------------------------------------------------------------------------------------------


def test_the_files_are_read_again_when_they_change_and_a_broken_one_changes_nothing(tmp_path: Path) -> None:
    allowlist, policy, specs = tmp_path / "allowlist.toml", tmp_path / "policy.toml", tmp_path / "specs.json"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    policy.write_text("[products.sample]\nsample_rate = 1\n")
    specs.write_bytes(orjson.dumps(wire.specs_document([SPEC])))
    live = LiveConfig(ConfigFiles(allowlist, policy, (specs,)).load(), poll_s=1.0)
    assert live.current(0.0).policy_for("sample").sample_rate == 1.0

    policy.write_text("[products.sample]\nsample_rate = 0.25\n")
    assert live.current(1.0).policy_for("sample").sample_rate == 0.25
    policy.write_text("[products.sample]\nsample_rate = 0.5\n")
    assert live.current(1.5).policy_for("sample").sample_rate == 0.25  # polled at most once a second
    assert live.current(2.0).policy_for("sample").sample_rate == 0.5

    specs.write_bytes(orjson.dumps(wire.specs_document([SPEC, OTHER])))
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n[products.other]\nexecutables = ["x"]\n')
    assert set(live.current(3.0).allowlist) == {"sample", "other"}
    assert set(live.current(3.0).declarations.current) == {"sample", "other"}

    policy.write_text("[products.sample]\nsample_rate = 7\n")  # not a rate: the previous policy stays
    assert live.current(4.0).policy_for("sample").sample_rate == 0.5
    allowlist.write_text('[products.unknown]\nexecutables = ["x"]\n')  # allowlisted but declared nowhere
    assert set(live.current(5.0).allowlist) == {"sample", "other"}
    assert live.counts == {"config:reloaded": 3, "config:reload-failed": 2}


def test_a_reload_changes_what_the_files_say_and_keeps_the_settings_from_the_command_line(tmp_path: Path) -> None:
    """k, the limits and the retention come from ``ceip serve``'s options, not from the files: a reload
    must not put their defaults back (a retention reset to 90 days would delete or keep the wrong data)."""
    policy = tmp_path / "policy.toml"
    policy.write_text("[products.sample]\nsample_rate = 1\n")
    files = ConfigFiles(policy=policy, installed=(SPEC, OTHER))
    given = attrs.evolve(files.load(k=7, limits=AdmissionLimits(max_string=100, rate_per_s=3)), retention_days=30)
    live = LiveConfig(given)
    policy.write_text("[products.sample]\nsample_rate = 0.5\n")
    reloaded = live.current(1.0)
    assert live.counts == {"config:reloaded": 1}
    assert reloaded.policy_for("sample").sample_rate == 0.5
    assert (reloaded.k, reloaded.limits, reloaded.retention_days) == (
        7,
        AdmissionLimits(max_string=100, rate_per_s=3),
        30,
    )
    assert reloaded == attrs.evolve(given, policy=reloaded.policy)


def test_a_configuration_from_the_command_line_needs_a_declaration_of_every_allowlisted_product(
    tmp_path: Path,
) -> None:
    allowlist = tmp_path / "allowlist.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    with pytest.raises(ConfigError, match=r"sample have no declaration.*--specs"):
        ConfigFiles(allowlist).load()
    config = ConfigFiles(installed=(SPEC, OTHER)).load()
    assert config.allowlist == ALLOWLIST  # no allowlist file: the declared products and executables


def test_a_running_service_picks_up_a_new_policy_and_allowlist_without_a_restart(tmp_path: Path) -> None:
    """A real ``ceip serve``: the deployed files change under it, and the next reports meet the new rules."""
    allowlist, policy = tmp_path / "allowlist.toml", tmp_path / "policy.toml"
    allowlist.write_text('[products.sample]\nexecutables = ["sample-app"]\n')
    policy.write_text("[products.sample]\nsample_rate = 1\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ceip_core", "serve", "--port", str(port), "--data", str(tmp_path)]
    command += ["--allowlist", str(allowlist), "--policy", str(policy), "--specs", str(specs_file(tmp_path))]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    async def get(path: str) -> Any:
        async with aiohttp.ClientSession() as session, session.get(f"{url}{path}") as response:
            return await response.json()

    async def send(item: dict[str, Any]) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{url}/v1/reports", data=body(item), headers=GZIP) as response,
        ):
            result: dict[str, Any] = (await response.json())["results"][0]
            return result

    def policy_now() -> Any:
        try:
            return asyncio.run(get("/v1/policy"))["products"]
        except aiohttp.ClientError:
            return None

    try:
        wait_for(policy_now, timeout=30)
        assert asyncio.run(send(report()))["status"] == "accepted"
        assert asyncio.run(send(report(product="other", counters={"used": 1})))["reason"] == "not-allowlisted"

        policy.write_text("[products.sample]\nsample_rate = 0\n")
        wait_for(lambda: policy_now()["sample"]["sample_rate"] == 0, timeout=10)
        assert asyncio.run(send(report()))["reason"] == "sampled-out"

        allowlist.write_text(
            '[products.sample]\nexecutables = ["sample-app"]\n[products.other]\nexecutables = ["other-app"]\n'
        )
        wait_for(lambda: "other" in policy_now(), timeout=10)
        assert asyncio.run(send(report(product="other", counters={"used": 1})))["status"] == "accepted"
        counts = asyncio.run(get("/readyz"))["ingest"]
        assert counts["config:reloaded"] == 2 and counts["rejected:sampled-out"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def test_ceip_describe_json_is_the_specs_file_and_keeps_every_digest(sample: Any) -> None:
    result = CliRunner().invoke(cli, ["describe", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    read = wire.read_specs(result.stdout.encode())
    assert [wire.spec_digest(s) for s in read] == [wire.spec_digest(s) for s in (OTHER, SPEC)]
    with pytest.raises(wire.WireError, match="metrics"):
        wire.read_specs(orjson.dumps({"schema": 1, "products": [{"id": "x", "display_name": "X", "executables": []}]}))


async def test_a_machine_over_its_rate_costs_no_second_pass(make_client: Any) -> None:
    client = await make_client(config(rate_burst=1, rate_per_s=0.001))
    guid = str(uuid.uuid4())
    assert [r["status"] for r in await post(client, report(guid, counters={EMAIL: 1}))] == ["accepted"]
    assert await counters(client) == {"scrubbed:declared.undeclared_counter": 1, "spec:none-named": 1}
    response = await client.post("/v1/reports", data=body(report(guid, counters={EMAIL: 1})), headers=GZIP)
    assert response.status == 429
    assert await counters(client) == {"scrubbed:declared.undeclared_counter": 1, "spec:none-named": 1}
