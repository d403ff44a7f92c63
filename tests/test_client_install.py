"""The client install (``pip install ceip``) carries no receiving service: the client works without the
service's packages, and the service's commands say what to install instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ceip_core.cli import NEEDS_SERVICE
from ceip_core.cli.common import SERVICE_PACKAGES

#: Runs ``ceip ARGS`` as if the service's packages were not installed (an import of one raises ImportError).
WITHOUT_SERVICE = (
    "import sys\n"
    f"for name in {SERVICE_PACKAGES!r}: sys.modules[name] = None\n"
    "from ceip_core.cli import main\n"
    "sys.argv = ['ceip', *sys.argv[1:]]\n"
    "main()\n"
)


def ceip_without_service(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_SERVICE, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", sorted(NEEDS_SERVICE))
def test_a_service_command_says_what_to_install(command: str, ceip_home: Path) -> None:
    proc = ceip_without_service(command)
    assert proc.returncode == 1, proc.stderr
    assert "install it with pip install 'ceip[service]'" in proc.stderr
    assert "missing: msgspec, asyncpg, jinja2" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--help"], ["status"], ["consent", "status"], ["review"], ["allowlist", "check"]])
def test_the_client_commands_work_without_the_service(args: list[str], sample: object) -> None:
    proc = ceip_without_service(*args)
    assert proc.returncode == 0, proc.stderr


def test_a_product_records_and_seals_without_the_service(sample: object, ceip_home: Path) -> None:
    code = (
        "import sys\n"
        f"for name in {SERVICE_PACKAGES!r}: sys.modules[name] = None\n"
        "import ceip_core\n"
        "from ceip_core.consent import Consent\nfrom ceip_core.statedb import StateDB\n"
        "Consent(StateDB()).opt_in('sample')\n"
        "with ceip_core.recorder('sample', '1.0') as rec:\n    rec.feature('open_file')\n"
        "from ceip_core.spool import Spool\nassert Spool(StateDB()).stats().reports == 1\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
