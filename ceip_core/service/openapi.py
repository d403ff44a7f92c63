"""The OpenAPI 3.1 description of the receiving service's HTTP API, served at ``GET /v1/openapi.json``.

The schemas of batch items are not written by hand: they are msgspec's JSON Schema of the very types the
validator decodes with (``validation._decoders``), which are generated from the records, so the
description cannot drift from what the service accepts. The rest (paths, answers, error bodies) is written
here from docs/wire-format.md ("HTTP"); ``tests/service/test_openapi.py`` holds it to the application's
routes and to real answers, and CI runs schemathesis against a running ``ceip serve`` with it.

What a JSON schema cannot say is said in the descriptions: the body is gzip-compressed (``Content-Encoding:
gzip``), ids are UUIDs, timestamps carry a UTC offset and lie within the accepted window; an item that
breaks such a rule gets its own ``rejected`` result in a 200 answer, never a refusal of the batch.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import msgspec

from ceip_core import wire
from ceip_core.records import SCHEMA_VERSION
from ceip_core.service.config import AdmissionLimits
from ceip_core.service.dashboard import DASHBOARD, LOGIN, LOGOUT
from ceip_core.service.panels import STYLESHEET
from ceip_core.service.queries import QUERIES
from ceip_core.service.validation import Timestamp, _decoders  # the validator's own msgspec types, made per limits

PATH = "/v1/openapi.json"
_REF = "#/components/schemas/{name}"
_JSON = "application/json"
_HTML = "text/html"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": _ref("Error")}}}


def _retry(description: str) -> dict[str, Any]:
    return {**_error(description), "headers": {"Retry-After": {"schema": {"type": "string"}, "required": True}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {_HTML: {"schema": {"type": "string"}}}}


_SEE_OTHER = {"description": "See other: the page to go to is in Location", "headers": {"Location": {"schema": {}}}}


def _batch_operation(kind: str, summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": f"post_{kind}s",
        "parameters": [
            {
                "name": "Content-Encoding",
                "in": "header",
                "required": True,
                "description": "The body is gzip-compressed; anything else is 415.",
                "schema": {"type": "string", "enum": ["gzip"]},
            }
        ],
        "requestBody": {
            "required": True,
            "description": (
                f"A batch of `{kind}` items, gzip-compressed (at most 1 MiB, 10 MiB expanded). Items are checked "
                "one by one: ids must be UUIDs and report timestamps carry a UTC offset and lie within the accepted "
                "window; an item that fails gets its own `rejected` result."
            ),
            "content": {wire.CONTENT_TYPE: {"schema": _ref(f"{kind.capitalize()}Batch")}},
        },
        "responses": {
            "200": {
                "description": "The batch was read: one result per item, in the order sent",
                "content": {_JSON: {"schema": _ref("Results")}},
            },
            "400": _error("Not a batch: bad-gzip, malformed-json, malformed, unsupported-schema"),
            "408": _error("timeout: the request took longer than the request timeout"),
            "413": _error(
                "too-large: over the compressed or expanded limit; too-many-items: more items than a batch may "
                "hold (`limit` says how many: send them in batches of at most that many)"
            ),
            "415": _error("unsupported-encoding: Content-Encoding is not gzip"),
            "429": _retry("rate-limited: a machine of the batch, or the connection's source, is over its rate"),
            "503": _retry("storage-unavailable: the database cannot take the batch now"),
        },
    }


def _query_operation() -> dict[str, Any]:
    text = {"type": "string", "maxLength": 255}
    parameters: list[dict[str, Any]] = [
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": sorted(QUERIES)}}
    ]
    for name, description in (
        ("product", "Only this product."),
        ("version", "Only this product version."),
        ("since", "First day (2026-11-01) or a timestamp with offset, included."),
        ("until", "Last day or a timestamp with offset, included."),
    ):
        parameters.append({"name": name, "in": "query", "required": False, "description": description, "schema": text})
    return {
        "summary": "Aggregates over the stored reports (never a GUID or a report)",
        "operationId": "query",
        "security": [{"bearer": []}, {"session": []}],
        "parameters": parameters,
        "responses": {
            "200": {"description": "The query's rows", "content": {_JSON: {"schema": _ref("QueryAnswer")}}},
            "400": _error("bad-query: a malformed day, or a product or version that cannot be one"),
            "401": {
                **_error("unauthorized: no valid bearer token or session"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            },
            "404": _error("unknown-query"),
            "408": _error("timeout"),
            "503": _retry("storage-unavailable"),
        },
    }


def _schema_hook(kind: type) -> dict[str, Any]:
    """The wire's own types: a timestamp is RFC 3339 with an offset, read by ``wire.parse_timestamp``."""
    if kind is Timestamp:
        return {"type": "string", "format": "date-time"}
    raise NotImplementedError(f"no schema for {kind!r}")


def _schemas(limits: AdmissionLimits) -> dict[str, Any]:
    _, report, deletion = _decoders(limits)
    (report_ref, deletion_ref), components = msgspec.json.schema_components(
        [report, deletion], ref_template=_REF, schema_hook=_schema_hook
    )
    batch = {"type": "object", "required": ["schema", "items"], "additionalProperties": False}
    components.update(
        ReportBatch={
            **batch,
            "properties": {
                "schema": {"enum": [SCHEMA_VERSION]},
                "items": {"type": "array", "items": report_ref, "maxItems": limits.max_items},
            },
        },
        DeletionBatch={
            **batch,
            "properties": {
                "schema": {"enum": [SCHEMA_VERSION]},
                "items": {"type": "array", "items": deletion_ref, "maxItems": limits.max_items},
            },
        },
        Error={
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {"type": "string"},
                "detail": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "description": "With too-many-items: the most items"},
            },
            "additionalProperties": False,
        },
        Results={
            "type": "object",
            "required": ["results"],
            "additionalProperties": False,
            "properties": {"results": {"type": "array", "items": _ref("Result")}},
        },
        Result={
            "type": "object",
            "required": ["id", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": ["string", "null"], "description": "report_id or request_id; null if unreadable"},
                "status": {"enum": ["accepted", "duplicate", "rejected"]},
                "reason": {"type": "string"},
                "detail": {"type": "string"},
            },
        },
        Policy={
            "type": "object",
            "required": ["products"],
            "additionalProperties": False,
            "properties": {
                "products": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "required": ["enabled", "sample_rate"],
                        "additionalProperties": False,
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "sample_rate": {"type": "number", "minimum": 0, "maximum": 1},
                        },
                    },
                }
            },
        },
        Status={"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
        QueryAnswer={
            "type": "object",
            "required": ["hidden", "k", "filters"],
            "properties": {
                "hidden": {"type": "integer", "minimum": 0},
                "k": {"type": "integer", "minimum": 1},
                "filters": {"type": "object"},
            },
            "additionalProperties": {"type": "array", "items": {"type": "object"}},
        },
    )
    return components


@cache
def openapi(limits: AdmissionLimits) -> dict[str, Any]:
    """The OpenAPI document for a service with these limits (they bound strings and lists in the schemas)."""
    form = {
        "type": "object",
        "properties": {"token": {"type": "string"}, "next": {"type": "string"}},
        "additionalProperties": False,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ceip receiving service",
            "version": f"wire schema {SCHEMA_VERSION}",
            "description": "What `ceip serve` answers; the prose is docs/wire-format.md. Bad input never gets a 5xx.",
        },
        "paths": {
            "/v1/reports": {"post": _batch_operation("report", "Upload a batch of reports")},
            "/v1/deletions": {"post": _batch_operation("deletion", "Upload a batch of deletion requests")},
            "/v1/policy": {
                "get": {
                    "summary": "The kill switch and sample rate per product",
                    "operationId": "get_policy",
                    "responses": {"200": {"description": "Policy", "content": {_JSON: {"schema": _ref("Policy")}}}},
                }
            },
            "/v1/query/{name}": {"get": _query_operation()},
            "/metrics": {
                "get": {
                    "summary": "Storage and ingest figures in the Prometheus text format (query token)",
                    "operationId": "metrics",
                    "security": [{"bearer": []}],
                    "responses": {
                        "200": {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
                        "401": _error("unauthorized"),
                        "503": _retry("storage-unavailable"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "summary": "The process runs",
                    "operationId": "healthz",
                    "responses": {"200": {"description": "ok", "content": {_JSON: {"schema": _ref("Status")}}}},
                }
            },
            "/readyz": {
                "get": {
                    "summary": "The database answers",
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "ready", "content": {_JSON: {"schema": _ref("Status")}}},
                        "503": _retry("storage-unavailable"),
                    },
                }
            },
            PATH: {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {
                        "200": {"description": "OpenAPI 3.1", "content": {_JSON: {"schema": {"type": "object"}}}}
                    },
                }
            },
            "/": {
                "get": {"summary": "Leads to the dashboard", "operationId": "root", "responses": {"303": _SEE_OTHER}}
            },
            DASHBOARD: {
                "get": {
                    "summary": "The dashboard (HTML, for people)",
                    "operationId": "dashboard",
                    "security": [{"session": []}],
                    "parameters": [
                        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                        for name in ("product", "version", "since", "until")
                    ],
                    "responses": {
                        "200": _html("A page"),
                        "303": _SEE_OTHER,
                        "400": _html("A page naming the bad parameter"),
                        "503": _html("A page saying the database is unavailable"),
                    },
                }
            },
            LOGIN: {
                "get": {
                    "summary": "The login page",
                    "operationId": "login_page",
                    "parameters": [{"name": "next", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {"200": _html("The login form"), "303": _SEE_OTHER},
                },
                "post": {
                    "summary": "Log in with the query token",
                    "operationId": "login",
                    "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": form}}},
                    "responses": {
                        "303": _SEE_OTHER,
                        "401": _html("The login form again"),
                        "403": _html("Refused: the form was posted from another site's page"),
                        "408": _error("timeout"),
                        "429": _html("Too many wrong tokens lately; Retry-After says when to try again"),
                    },
                },
            },
            LOGOUT: {
                "post": {
                    "summary": "Log out (ends the session on every worker)",
                    "operationId": "logout",
                    "responses": {"303": _SEE_OTHER, "403": {"description": "Posted from another site's page"}},
                }
            },
            STYLESHEET: {
                "get": {
                    "summary": "The dashboard's stylesheet",
                    "operationId": "stylesheet",
                    "responses": {
                        "200": {"description": "CSS", "content": {"text/css": {"schema": {"type": "string"}}}}
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(limits),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The query token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "ceip_session"},
            },
        },
    }
