"""The OpenAPI description stays true: it names every route of the application and no other, the service
serves it, the factory's valid bodies match its request schemas, and real answers match its responses."""

from __future__ import annotations

import gzip
from typing import Any

import jsonschema_rs
import orjson
from service.factory import GZIP, TOKEN, auth, body, config, deletion, report

from ceip_core.service.app import make_app
from ceip_core.service.config import AdmissionLimits
from ceip_core.service.openapi import openapi


def validator(spec: dict[str, Any], name: str) -> Any:
    """A validator for the component schema ``name``, resolving references inside the document."""
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}", **spec})


def test_every_route_of_the_application_is_described_and_nothing_else(tmp_path: Any) -> None:
    app = make_app(config(), f"sqlite://{tmp_path / 'r.db'}", TOKEN)
    routes = {
        (resource.canonical, route.method.lower())
        for resource in app.router.resources()
        for route in resource
        if route.method != "HEAD"  # aiohttp answers HEAD beside every GET
    }
    spec = openapi(AdmissionLimits())
    described = {(path, method) for path, item in spec["paths"].items() for method in item}
    assert routes == described
    assert spec["openapi"].startswith("3.")
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)


def test_the_factorys_bodies_match_the_request_schemas_and_broken_ones_do_not() -> None:
    spec = openapi(AdmissionLimits())
    reports, deletions = validator(spec, "ReportBatch"), validator(spec, "DeletionBatch")
    items = [report(), report(problems={"E@x.py:1": 2}, timings={"render_ms": [0, 3, 1]}), report(product="other")]
    batch = orjson.loads(gzip.decompress(body(*items)))
    reports.validate(batch)
    deletions.validate(orjson.loads(gzip.decompress(body(deletion(items[0]["guid"])))))
    assert not deletions.is_valid(batch)
    for broken in (
        {**items[0], "counters": [{"name": "x", "value": "5", "label": None}]},
        {**items[0], "surprise": 1},
        {**items[0], "product": "p" * 256},
        {k: v for k, v in items[0].items() if k != "guid"},
    ):
        assert not reports.is_valid({"schema": 1, "items": [broken]})
    assert not reports.is_valid({"schema": 1, "items": [], "extra": 1})


async def test_the_service_serves_its_description_and_its_answers_match_it(make_client: Any) -> None:
    limits = AdmissionLimits(max_string=100)
    client = await make_client(config(max_string=100))
    response = await client.get("/v1/openapi.json")
    assert response.status == 200 and response.content_type == "application/json"
    spec = await response.json()
    assert spec == orjson.loads(orjson.dumps(openapi(limits)))
    assert spec["components"]["schemas"]["WireReport"]["properties"]["product"]["maxLength"] == 100

    good, bad = report(), {**report(), "guid": "not-a-uuid"}
    answer = await client.post("/v1/reports", data=body(good, bad), headers=GZIP)
    assert answer.status == 200
    validator(spec, "Results").validate(await answer.json())
    refused = await client.post("/v1/reports", data=b"not gzip", headers=GZIP)
    assert refused.status == 400
    validator(spec, "Error").validate(await refused.json())
    validator(spec, "Policy").validate(await (await client.get("/v1/policy")).json())
    for name in spec["paths"]["/v1/query/{name}"]["get"]["parameters"][0]["schema"]["enum"]:
        answer = await client.get(f"/v1/query/{name}", headers=auth())
        assert answer.status == 200, name
        validator(spec, "QueryAnswer").validate(await answer.json())
    validator(spec, "Status").validate(await (await client.get("/readyz")).json())
