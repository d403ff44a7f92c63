"""The service's second pass over a valid report: the vendor's policy, the declaration, the scrubbers.

Defence in depth (docs/scrubbing.md, "The service's second pass"): the client already honours the kill switch and
the sample, drops what its product does not declare and scrubs identifiers, but a hand-made report, a
stale client or a bug in one must not get around that. So before a report is stored the service:

1. refuses it if the policy it publishes at ``GET /v1/policy`` says the product is switched off
   (``disabled-by-vendor``) or the machine is outside the product's sample (``sampled-out``), decided by
   the client's own code (``vendor_policy.machine_draw`` and ``VendorPolicy.drop_reason``);
2. picks the declaration the report names by its ``spec_digest`` (the product's current one if it names
   none, as old clients do, or one this service does not know), and refuses the report if the product has
   no declaration at all (``undeclared-product``);
3. runs the registered scrubbers, the very pipeline the client ran (``scrubbing.run_pipeline``), with no
   machine names (the service does not know the sender's; its own must not be scrubbed). What they drop or
   replace is counted per reason (``scrubbed:<scrubber>.<reason>``) and added to the stored report's
   diagnostics under ``service.`` (the client's own counts stay as they were), so a stored report says
   which side removed what. Diagnostics keys that are not shaped like the client's own names are dropped.

The result is the report as stored; a report nothing changed keeps the struct and bytes it came with.
Most reports are such: a well-behaved client already dropped, scrubbed and cut what the pipeline would.
So each scrubber is first asked whether it would change the report (its ``keeps`` test, which looks at
every free-text string with the identifiers scrubber itself, cached per distinct string), and the
pipeline, which rebuilds the whole report, runs only for a report that some scrubber would change. That
shortcut gives the very result the pipeline would (a test holds the two to it).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from ceip_core.records import ProductSpec, Report
from ceip_core.scrubbing import Scrubber, ScrubContext, ScrubLimits, run_pipeline
from ceip_core.service.config import ProductPolicy, ServiceConfig
from ceip_core.service.validation import Rejection, Valid, revalidate, to_record
from ceip_core.vendor_policy import ProductRule, VendorPolicy, machine_draw

log = logging.getLogger(__name__)

#: A spec digest as ``wire.spec_digest`` makes it.
SPEC_DIGEST = re.compile(r"[0-9a-f]{32}")  # always fullmatch: `$` lets a final newline through
#: The shape of every diagnostics key a client makes (``recorder.too_many_series``,
#: ``scrub.identifiers.email``); anything else could be free text, so it is dropped.
DIAGNOSTIC_KEY = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_:-]+)*")
#: What the service puts before its own counts in a stored report's diagnostics.
SERVICE_PREFIX = "service."
_SCRUB_PREFIX = "scrub."


def policy_reason(policy: ProductPolicy, guid: str, product: str) -> str | None:
    """Why the published policy turns this report away, decided exactly as the client decides it."""
    rules = VendorPolicy({product: ProductRule(policy.enabled, policy.sample_rate)})
    return rules.drop_reason(product, machine_draw(guid, product))


def screen(
    valid: Valid, config: ServiceConfig, scrubbers: Sequence[Scrubber], counts: Counter[str]
) -> Valid | Rejection:
    """The report to store (``valid`` itself if nothing changed), or why it is refused. Counts into ``counts``."""
    item = valid.item
    policy = config.policy_for(item.product)
    # A machine's draw is below 1, so the default policy (enabled, every machine) turns none away.
    reason = None if policy == _EVERY_MACHINE else policy_reason(policy, item.guid, item.product)
    if reason == "disabled-by-vendor":
        return Rejection(reason, f"the service's policy switches {item.product!r} off (GET /v1/policy)")
    if reason is not None:
        return Rejection(reason, f"this machine is outside the sample of {item.product!r} (GET /v1/policy)")
    if item.spec_digest is not None and not SPEC_DIGEST.fullmatch(item.spec_digest):
        return Rejection("invalid", "spec_digest must be 32 lower-case hex digits - at `$.spec_digest`")
    spec, which = config.declarations.applying_to(item.product, item.spec_digest)
    if spec is None:
        return Rejection("undeclared-product", f"this service knows no declaration of {item.product!r}")
    if which != "named":
        counts[f"spec:{which}"] += 1
    ctx = _context(spec)
    if _kept_as_sent(item, scrubbers, ctx):
        return valid
    record = to_record(item)
    outcome = run_pipeline(record, scrubbers, ctx)
    if outcome.report is None:
        return Rejection("scrubbed", f"dropped by the service's second pass ({outcome.dropped_by})")
    scrubbed = _with_service_counts(outcome.report, record.diagnostics, counts)
    return valid if _unchanged(record, scrubbed) else revalidate(scrubbed, config.limits)


_EVERY_MACHINE = ProductPolicy()
_CONTEXTS: dict[int, tuple[ProductSpec, ScrubContext]] = {}


def _context(spec: ProductSpec) -> ScrubContext:
    """What the scrubbers see for a declaration: no machine names, the client's limits. Made once per spec
    object (keyed by identity, as ``declared`` indexes specs: hashing a whole spec would cost more)."""
    hit = _CONTEXTS.get(id(spec))
    if hit is None or hit[0] is not spec:
        if len(_CONTEXTS) >= 64:
            _CONTEXTS.clear()
        hit = _CONTEXTS[id(spec)] = (spec, ScrubContext(spec=spec, limits=ScrubLimits()))
    return hit[1]


def _kept_as_sent(item: Any, scrubbers: Sequence[Scrubber], ctx: ScrubContext) -> bool:
    """Whether the second pass would store the report exactly as it came, found without running it.

    Every scrubber is asked whether it would leave the report as it is (its ``keeps``: each free-text string
    through the identifiers scrubber, each name through the declaration, each size through the limits); a
    scrubber without ``keeps``, or one whose ``keeps`` fails, means the pipeline runs. The report's series
    must be one per key of :data:`_ORDER` (so that "as it is, up to their order" is what
    :func:`_unchanged` would find) and its diagnostics keys all shaped like a client's. Only a report that
    passes all of that skips the pipeline, whose result would have been the report itself; anything that
    would be dropped, replaced or counted takes the pipeline.
    """
    if not all(map(DIAGNOSTIC_KEY.fullmatch, item.diagnostics)):
        return False
    for name, key in _ORDER.items():
        series = getattr(item, name)
        if len(set(map(key, series))) != len(series):
            return False
    for scrubber in scrubbers:
        keeps = getattr(scrubber, "keeps", None)
        try:
            if keeps is None or not keeps(item, ctx):
                return False
        except Exception:  # fail closed: the pipeline decides (and drops what it cannot scrub)
            log.exception("scrubber %s could not tell whether it keeps a report; running the pipeline", scrubber.name)
            return False
    return True


#: How the scrubbers order the series they emit; a report that differs only in that order is unchanged.
_ORDER = {
    "counters": lambda s: (s.name, s.label or ""),
    "histograms": lambda s: (s.name, s.label or ""),
    "problems": lambda p: (p.kind, p.signature),
}


def _unchanged(record: Report, scrubbed: Report) -> bool:
    """Whether the scrubbers left ``record`` as it was, up to the order of its series (a client sends
    them sorted; a hand-made report need not, and re-encoding it for that alone would gain nothing)."""
    if scrubbed == record:
        return True
    for name, key in _ORDER.items():
        if sorted(getattr(record, name), key=key) != sorted(getattr(scrubbed, name), key=key):
            return False
    return attrs.evolve(scrubbed, **{name: getattr(record, name) for name in _ORDER}) == record


def _with_service_counts(scrubbed: Report, sent: dict[str, int], counts: Counter[str]) -> Report:
    """``scrubbed`` with the client's diagnostics as sent (keys of the wrong shape dropped) and what the
    scrubbers added here under ``service.``; both counted into ``counts``."""
    kept = {k: v for k, v in sent.items() if DIAGNOSTIC_KEY.fullmatch(k)}
    added: dict[str, int] = {}
    if len(kept) < len(sent):
        added["diagnostics.invalid_key"] = len(sent) - len(kept)
    for key, n in scrubbed.diagnostics.items():
        if n > sent.get(key, 0):
            added[key.removeprefix(_SCRUB_PREFIX)] = n - sent.get(key, 0)
    if not added:
        return scrubbed if scrubbed.diagnostics == sent else attrs.evolve(scrubbed, diagnostics=sent)
    for key, n in added.items():
        counts[f"scrubbed:{key}"] += n
    mine = {f"{SERVICE_PREFIX}{_SCRUB_PREFIX}{k}": n for k, n in added.items()}
    return attrs.evolve(scrubbed, diagnostics=dict(sorted({**kept, **mine}.items())))
