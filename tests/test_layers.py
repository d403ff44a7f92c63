"""The contract that keeps the service out of the client names every module of the client.

``lint-imports`` (run by .ci/run) checks the contracts in pyproject.toml. The two layers contracts are
exhaustive (a module in no layer breaks them); a ``forbidden`` contract has no such option, so this test
keeps its list of the client's modules whole: a new module cannot import the service unseen.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import ceip_core

ROOT = Path(ceip_core.__file__).parent


def test_every_client_module_is_forbidden_the_service() -> None:
    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    (forbidden,) = [c for c in config["contracts"] if c["name"] == "The client never imports the receiving service"]
    modules = {f"ceip_core.{p.stem}" for p in ROOT.glob("*.py") if p.stem != "__init__"}
    modules |= {f"ceip_core.{p.name}" for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    # The CLI has its own contract (one command needs the service's extra); __main__ is the CLI.
    assert set(forbidden["source_modules"]) == modules - {"ceip_core.service", "ceip_core.cli", "ceip_core.__main__"}
