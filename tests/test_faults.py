"""The fault campaign in small (bench/faults.py runs it at full size): real ``ceip upload``, ``ceip agent``
and ``ceip serve`` processes killed with SIGKILL, an outage, and a fault proxy; nothing acknowledged is
lost, nothing is stored twice, and the service never answers 5xx."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from campaign import Campaign, Outcome, flaky_proxy, kill_agent, kill_serve, kill_uploader, outage
from faultproxy import FAULTS

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; the agent observes Linux")


@pytest.fixture
def run(sample: Any, tmp_path: Path) -> Campaign:
    return Campaign(tmp_path / "campaign", "sample", seed=7)


def assert_sound(outcome: Outcome, *, drained: bool = True) -> None:
    assert outcome.created > 0, outcome
    assert outcome.lost == 0, outcome
    assert outcome.duplicated == 0, outcome
    assert outcome.server_errors == 0 and outcome.crashes == 0, outcome
    if drained:
        assert outcome.queued == 0 and outcome.stored == outcome.created, outcome
    assert 0 < outcome.peak_service < 500 * 2**20, outcome


def test_killing_the_uploader_loses_and_duplicates_nothing(run: Campaign) -> None:
    outcome = kill_uploader(run, trials=3, reports=30)
    assert_sound(outcome)
    assert outcome.acknowledged == outcome.created  # the proxy saw every acceptance (and none twice)


def test_killing_the_agent_loses_and_duplicates_nothing(run: Campaign) -> None:
    assert_sound(kill_agent(run, trials=2, seal_every=0.2, longest=3.0))


def test_killing_the_service_loses_and_duplicates_nothing(run: Campaign) -> None:
    outcome = kill_serve(run, trials=2, reports=30)
    assert_sound(outcome)
    assert "3 starts" in outcome.notes[0]


def test_after_an_outage_every_queue_drains(run: Campaign) -> None:
    outcome = outage(run, machines=2, reports=10, down_s=1.0, deadline_s=60.0)
    assert_sound(outcome)
    assert "drained in" in outcome.notes[0]


def test_every_fault_of_the_proxy_once_loses_and_duplicates_nothing(run: Campaign) -> None:
    faults = [f for f in FAULTS if f != "pass"]
    outcome = flaky_proxy(run, machines=1, reports=10, client_timeout=1.0, deadline_s=60.0, faults=faults)
    assert_sound(outcome)
    assert outcome.acknowledged == outcome.created
    # Each fault was applied once, and the reports then passed.
    assert all(f"{fault} 1" in outcome.notes[0] for fault in faults), outcome.notes
