"""The layer contracts in pyproject.toml name every module, so that a new one cannot escape them.

``lint-imports`` (run by .ci/run) checks the imports between the modules a contract names; a module it
does not name is checked only as a step on someone else's path. These tests keep the lists whole.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import ceip_core

ROOT = Path(ceip_core.__file__).parent


def contract(name: str) -> dict[str, object]:
    config = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["importlinter"]
    (found,) = [c for c in config["contracts"] if c["name"] == name]
    return found  # type: ignore[no-any-return]


def modules_in(package: Path, prefix: str) -> set[str]:
    """The modules and subpackages directly inside ``package``, by dotted name."""
    found = {f"{prefix}.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    return found | {f"{prefix}.{p.name}" for p in package.iterdir() if (p / "__init__.py").is_file()}


def layered(layers: object, container: str = "") -> list[str]:
    assert isinstance(layers, list)
    names = [name.strip() for layer in layers for name in layer.replace("|", ":").split(":")]
    return [f"{container}.{name}" if container else name for name in names]


def test_every_module_of_the_client_is_in_one_of_its_layers() -> None:
    named = layered(contract("The client's layers")["layers"])
    assert len(named) == len(set(named)), "a module is in two layers"
    assert set(named) == modules_in(ROOT, "ceip_core") - {"ceip_core.service"}


def test_every_client_module_is_forbidden_the_service() -> None:
    sources = contract("The client never imports the receiving service")["source_modules"]
    assert isinstance(sources, list)
    assert set(sources) == modules_in(ROOT, "ceip_core") - {"ceip_core.service", "ceip_core.cli", "ceip_core.__main__"}
