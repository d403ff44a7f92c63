"""schemathesis against a running ``ceip serve`` (a real process, SQLite, loopback): requests generated from
the service's own OpenAPI description (``/v1/openapi.json``), valid and invalid, must never get a 5xx, and
every answer must match the description (status code, content type, body schema).

schemathesis runs as its command-line tool (its pytest plugin does not follow pytest 9), with the hooks in
``schemathesis_hooks.py`` (batch bodies gzip-compressed, as clients send them). The suite runs a few
examples per operation; CI runs many more (``.ci/run`` sets ``CEIP_SCHEMATHESIS_EXAMPLES``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign import TOKEN, Service

from ceip_core.service.config import AdmissionLimits
from ceip_core.service.openapi import PATH, openapi

EXAMPLES = int(os.environ.get("CEIP_SCHEMATHESIS_EXAMPLES", "5"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Service]:
    service = Service(tmp_path / "service").start()
    try:
        yield service
    finally:
        service.stop()


def test_the_service_answers_as_described_and_never_5xx(running: Service, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    command = [str(schemathesis), "run", f"http://127.0.0.1:{running.port}/v1/openapi.json"]
    command += ["--header", f"Authorization: Bearer {TOKEN}", "--checks", CHECKS, "--max-examples", str(EXAMPLES)]
    command += ["--phases", "examples,coverage,fuzzing", "--seed", "1", "--workers", "1", "--no-color"]
    command += ["--generation-database", "none", "--request-timeout", "30"]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "schemathesis_hooks",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])),
    }
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    summary = run.stdout[run.stdout.find("SUMMARY") :] if "SUMMARY" in run.stdout else run.stdout[-3000:]
    print(summary)  # the CI log shows how many cases ran
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    # Every operation was exercised (schemathesis leaves out the description's own URL).
    operations = sum(len(item) for path, item in openapi(AdmissionLimits())["paths"].items() if path != PATH)
    assert re.search(rf"Selected: {operations}/{operations}\s+Tested: {operations}\b", summary), summary
    assert re.search(r"\d+ generated, \d+ passed", summary), summary
    # A request the service logged as its own failure fails the run, whatever its answer was.
    assert running.crashes() == 0, running.log.read_text()[-4000:]
