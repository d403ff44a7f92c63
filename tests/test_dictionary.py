"""The published data dictionary is exactly what the installed product plugins declare."""

from __future__ import annotations

from pathlib import Path

import ceip_analyst.plugin
import ceip_hub_server.plugin
import ceip_packager.plugin

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
