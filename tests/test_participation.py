"""The one answer to "is this product active?" (issue 17): ``ceip_core.participation``, which
``ceip consent status``, ``ceip allowlist check`` and ``ceip status`` all use."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from ceip_core import participation
from ceip_core.allowlist import Allowlist, make_entry
from ceip_core.consent import Consent, Policy, State
from ceip_core.plugins import Plugins
from ceip_core.statedb import StateDB

ALLOWED = Allowlist((make_entry("sample", "sample-app"),))


@pytest.mark.parametrize(
    ("state", "capped", "installed", "allowlisted"),
    list(itertools.product(State, [False, True], [False, True], [False, True])),
)
def test_active_only_when_opted_in_uncapped_installed_and_allowlisted(
    sample: Plugins, state: State, capped: bool, installed: bool, allowlisted: bool
) -> None:
    policy = Policy(off_products=frozenset({"sample"}) if capped else frozenset(), source="/etc/ceip/policy.toml")
    spec = sample.product("sample") if installed else None
    p = participation.of("sample", state, policy, spec, ALLOWED if allowlisted else Allowlist())
    assert p.opted_in is (state is State.IN and not capped)
    assert p.active is (state is State.IN and not capped and installed and allowlisted)
    # Not active always says why, and active never does.
    assert bool(p.why_not()) is not p.active


def test_why_not_names_each_reason_and_its_fix(sample: Plugins) -> None:
    spec = sample.product("sample")
    p = participation.of("sample", State.UNSET, Policy(), spec, Allowlist())
    assert p.why_not() == [
        "inert: not allowlisted (ceip allowlist add sample)",
        "not opted in (ceip consent in sample)",
    ]
    capped = participation.of("sample", State.IN, Policy(force_off=True, source="environment"), spec, ALLOWED)
    assert capped.why_not() == ["switched off by machine policy (environment)"]
    gone = participation.of("gone", State.IN, Policy(), None, ALLOWED)
    assert gone.why_not() == ["not installed"] and gone.opted_in and not gone.active


def test_survey_covers_installed_products_and_recorded_choices(sample: Plugins, ceip_home: Path) -> None:
    consent = Consent(StateDB(ceip_home), Policy())
    consent.opt_in("sample")
    consent.opt_in("gone")  # a product whose plugin was removed after the choice
    found = {p.product: p for p in participation.survey(consent, ALLOWED, sample.products)}
    assert sorted(found) == ["gone", "other", "sample"]
    assert [name for name, p in found.items() if p.active] == ["sample"]
    assert found["other"].inert == "not allowlisted" and not found["gone"].installed
    # ceip status's list, read without plugins or allowlist, is the same predicate's consent side.
    assert participation.opted_in(consent) == [name for name, p in sorted(found.items()) if p.opted_in]
    consent.policy = Policy(off_products=frozenset({"gone"}), source="policy")
    assert participation.opted_in(consent) == ["sample"]
