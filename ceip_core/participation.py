"""The one answer to "is this product active on this machine?", for every command that says so.

A product's reports flow only if all of these hold: the person opted in (:mod:`ceip_core.consent`), the
machine policy does not switch it off, its plugin is installed, and the allowlist names one of the
executables it declares (:mod:`ceip_core.allowlist`; otherwise sealing drops its reports and the agent
does not observe it). ``ceip consent status`` and ``ceip allowlist check`` show :func:`survey`'s answer;
``ceip status``, which must not load the plugins, lists the products the person takes part for
(:attr:`Participation.opted_in`, the same definition) and leaves the allowlist to ``ceip allowlist check``.

Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ceip_core.consent import ALL_CATEGORIES, Consent, Policy, State, read_categories

if TYPE_CHECKING:
    from ceip_core.allowlist import Allowlist
    from ceip_core.records import ProductSpec


@dataclass(frozen=True)
class Participation:
    """One product's participation on this machine, and why it is not active."""

    product: str
    state: State
    """The person's choice."""
    policy: str | None
    """The machine policy that switches the product off (its source), or None if it does not."""
    installed: bool
    """Whether a plugin declares the product (without it, nothing can be recorded or allowlisted)."""
    inert: str | None
    """Why the allowlist keeps an installed product inert, or None if it is allowlisted (or not installed)."""
    categories: frozenset[str] | None = None
    """The categories the person takes part with (values of ``ceip_core.records.Category``; None: all of
    them). Data of any other category is never recorded into a report, queued or sent; only meaningful
    while :attr:`opted_in`."""

    @property
    def opted_in(self) -> bool:
        """The person takes part and the machine policy lets them: the consent side of :attr:`active`."""
        return self.state is State.IN and self.policy is None

    @property
    def taking_part_with(self) -> tuple[str, ...]:
        """The categories the person chose (values of ``Category``, in its order): all of them after a
        plain opt-in, none unless opted in."""
        if self.state is not State.IN:
            return ()
        return tuple(c for c in ALL_CATEGORIES if self.categories is None or c in self.categories)

    @property
    def active(self) -> bool:
        """Reports flow: opted in, installed and allowlisted."""
        return self.opted_in and self.installed and self.inert is None

    def why_not(self) -> list[str]:
        """Every reason the product is not active, each with the command that changes it."""
        reasons = []
        if not self.installed:
            reasons.append("not installed")
        elif self.inert is not None:
            reasons.append(f"inert: {self.inert} (ceip allowlist add {self.product})")
        if self.policy is not None:
            reasons.append(f"switched off by machine policy ({self.policy})")
        elif self.state is not State.IN:
            reasons.append(f"not opted in (ceip consent in {self.product})")
        return reasons


def of(
    product: str,
    state: State,
    policy: Policy,
    spec: ProductSpec | None,
    allowlist: Allowlist,
    categories: frozenset[str] | None = None,
) -> Participation:
    """The participation of ``product``, given the person's choice (and its ``categories``, None for all),
    the machine policy, the product's declaration (None if no plugin declares it) and the allowlist."""
    return Participation(
        product=product,
        state=state,
        policy=_capped(policy, product),
        installed=spec is not None,
        inert=allowlist.why_inert(spec) if spec is not None else None,
        categories=categories,
    )


def survey(consent: Consent, allowlist: Allowlist, specs: Mapping[str, ProductSpec]) -> list[Participation]:
    """The participation of every installed product and of every product with a recorded choice, by name."""
    states = consent.states()
    categories = consent.db.read(read_categories)
    return [
        of(
            product,
            states.get(product, State.UNSET),
            consent.policy,
            specs.get(product),
            allowlist,
            categories.get(product),
        )
        for product in sorted(set(specs) | set(states))
    ]


def opted_in(consent: Consent) -> list[str]:
    """The products the person takes part for, the machine policy applied (:attr:`Participation.opted_in`),
    read from the consent alone: without the plugins or the allowlist, for ``ceip status``."""
    states = consent.states()
    return [p for p in sorted(states) if Participation(p, states[p], _capped(consent.policy, p), True, None).opted_in]


def _capped(policy: Policy, product: str) -> str | None:
    """The policy's source if it switches ``product`` off, else None."""
    return None if policy.allows(product) else policy.source
