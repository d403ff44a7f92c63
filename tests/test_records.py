"""The records' own checks: ids and names in exactly one spelling."""

from __future__ import annotations

import pytest

from ceip_core.records import Category, MetricKind, MetricSpec, ProductSpec, is_uuid

GUID = "5b3c2b52-fa2e-401a-81ba-f870ef6da39a"


def test_a_uuid_has_one_spelling() -> None:
    assert is_uuid(GUID)
    for other in (GUID + "\n", "\n" + GUID, f" {GUID}", GUID.upper(), f"{{{GUID}}}", GUID.replace("-", ""), GUID[:-1]):
        assert not is_uuid(other), repr(other)


def test_names_with_a_final_newline_are_refused() -> None:
    with pytest.raises(ValueError, match="product id"):
        ProductSpec(id="analyst\n", display_name="Analyst", executables=("analyst",), metrics=())
    with pytest.raises(ValueError, match="metric name"):
        MetricSpec("open_file\n", MetricKind.COUNTER, "uses", Category.PROGRAM_USE, "Files opened.")
