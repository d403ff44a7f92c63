"""The published data dictionary is exactly what the installed product plugins declare."""

from __future__ import annotations

from pathlib import Path

import ceip_analyst.plugin
import ceip_hub_server.plugin
import ceip_packager.plugin
import pytest

from ceip_core import dictionary

PUBLISHED = Path(__file__).parents[1] / "docs" / "data-dictionary.md"
PRODUCTS = (ceip_analyst.plugin, ceip_packager.plugin, ceip_hub_server.plugin)


def test_published_dictionary_matches_the_specs(ceip_plugins) -> None:
    plugins = ceip_plugins(*PRODUCTS)
    expected = dictionary.markdown(plugins.products.values())
    assert PUBLISHED.read_text() == expected, (
        "docs/data-dictionary.md is out of date: regenerate it with "
        "'CEIP_LOAD_PLUGINS=analyst,packager,hub-server ceip describe > docs/data-dictionary.md'"
    )


def test_every_metric_has_a_sentence_and_a_category(ceip_plugins) -> None:
    for spec in ceip_plugins(*PRODUCTS).products.values():
        for metric in spec.metrics:
            assert metric.description.endswith("."), f"{spec.id}.{metric.name}: end the description with a period"
            assert metric.description[0].isupper(), f"{spec.id}.{metric.name}: start the description with a capital"


def test_machine_configuration_and_sessions_are_described_field_by_field() -> None:
    import attrs

    from ceip_core.records import ProcessSession, SystemInfo

    text = dictionary.markdown([])
    for record in (SystemInfo, ProcessSession):
        for field in attrs.fields(record):
            assert f"| `{field.name}` |" in text, f"{record.__name__}.{field.name} is not in the dictionary"
    assert "`8-16 GiB`" in text and "`usb_high_speed`" in text and "`crashed`" in text


def test_a_field_without_a_description_cannot_be_published(monkeypatch) -> None:
    described = dict(dictionary.SESSION_FIELDS)
    del described["cpu_s"]
    monkeypatch.setattr(dictionary, "SESSION_FIELDS", described)
    with pytest.raises(KeyError, match=r"ProcessSession\.cpu_s"):
        dictionary.markdown([])
