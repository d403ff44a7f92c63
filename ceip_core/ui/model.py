"""What the feedback dialog shows and does, without any widget: the presenter the tk view draws.

Every change goes through the same public APIs as ``ceip consent``/``ceip reset-id`` (``Consent.opt_in``,
``opt_out``, ``reset_id``, then the ``ceip_consent_changed`` hook), so the dialog is not a second way to
change consent, only a second face of the one way. Everything here is plain data and strings, so the tests
drive it without a display.
"""

from __future__ import annotations

import gettext
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ceip_core.consent import Change, Consent, ConsentError, State
from ceip_core.plugins import Plugins
from ceip_core.records import Category, ProductSpec
from ceip_core.sent_history import count_sent
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB

#: The ``meta`` key that remembers, per product, that the first-run question was asked.
ASKED_KEY = "first-run-asked:{product}"


@dataclass(frozen=True)
class Collected:
    """One category of what a product collects, in plain words."""

    heading: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class ProductView:
    """One product as the dialog shows it."""

    id: str
    name: str
    state: State
    capped: bool
    """Switched off by the machine's policy: the choice cannot be changed here."""
    queued: int
    """Reports of this product waiting to be sent."""
    collected: tuple[Collected, ...]
    categories: frozenset[Category] = frozenset()
    """The categories of information the person sends for this product (none while it does not take part)."""

    @property
    def participating(self) -> bool:
        return self.state is State.IN and not self.capped


class OptionsModel:
    """The "Customer Feedback Options" for some products (or all installed ones) in one state folder."""

    def __init__(
        self,
        plugins: Plugins,
        db: StateDB,
        products: list[str] | None = None,
        translations: gettext.NullTranslations | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """:param clock: what "the last 30 days" are counted back from (tests move it)."""
        self.plugins = plugins
        self.clock = clock
        self.spool = Spool(db)
        self.consent: Consent = self.spool.consent
        self._ = (translations or gettext.NullTranslations()).gettext
        if products is None:
            products = list(plugins.products)
        self.specs: list[ProductSpec] = [plugins.product(p) for p in products]  # PluginError names the known

    # -- what is shown ------------------------------------------------------------------------------

    def title(self) -> str:
        return self._("Customer Feedback Options")

    def intro(self) -> str:
        return self._(
            "You can help improve the products you use by letting them send anonymous reports about how "
            "they are used and how well they work. Nothing is sent until you say yes, for each product, "
            "and you can stop at any time."
        )

    def products(self) -> list[ProductView]:
        states = self.consent.states()
        queued = self.spool.stats().by_product
        return [
            ProductView(
                id=spec.id,
                name=spec.display_name,
                state=states.get(spec.id, State.UNSET),
                capped=not self.consent.policy.allows(spec.id),
                queued=queued.get(spec.id, 0),
                collected=self.collected(spec),
                categories=self.consent.categories(spec.id),
            )
            for spec in self.specs
        ]

    def heading(self, category: Category) -> str:
        """A category's name in plain words."""
        return {
            Category.CONFIGURATION: self._("Configuration"),
            Category.PERFORMANCE: self._("Performance and reliability"),
            Category.PROGRAM_USE: self._("Program use"),
        }[category]

    def categories_text(self) -> str:
        return self._(
            "Send these kinds of information (untick one to stop sending it; what is waiting is taken out of it):"
        )

    def collected(self, spec: ProductSpec) -> tuple[Collected, ...]:
        """What ``spec`` may collect, by category, in the sentences of its data dictionary (the product's
        own words: a product translates its descriptions itself), plus what every report carries."""
        machine = self._(
            "Where the ceip agent runs: coarse machine configuration (number of processors, memory size in "
            "steps, operating system and version, architecture, number of network connections)."
        )
        out = []
        for category in Category:
            items = [m.description for m in sorted(spec.metrics, key=lambda m: m.name) if m.category is category]
            if category is Category.CONFIGURATION:
                items.append(machine)
            if items:
                out.append(Collected(self.heading(category), tuple(items)))
        return tuple(out)

    def every_report(self) -> str:
        return self._(
            "Every report carries a random machine ID, the product's version and the time it covers. It never "
            "carries your name, address, e-mail, account, computer or user name, network address or any "
            "serial number."
        )

    def state_text(self, view: ProductView) -> str:
        if view.capped:
            return self._("Switched off for this computer by its administrator.")
        if view.participating and view.categories != frozenset(Category):
            return self._("Taking part, with some kinds of information only: {categories}.").format(
                categories=", ".join(self.heading(c) for c in Category if c in view.categories)
            )
        return {
            State.IN: self._("Taking part."),
            State.OUT: self._("Not taking part."),
            State.UNSET: self._("Not taking part (no choice made yet)."),
        }[view.state]

    def queued_text(self, view: ProductView) -> str:
        return self._("Reports waiting to be sent: {count}").format(count=view.queued)

    def machine_id(self) -> str | None:
        return self.consent.guid()

    def machine_id_text(self) -> str:
        guid = self.machine_id()
        if guid is None:
            return self._("Machine ID: none (no product takes part)")
        return self._("Machine ID: {guid}").format(guid=guid)

    def sending_text(self) -> str:
        """What is queued, what was sent in the last 30 days (counted from the history ``ceip review --sent``
        shows), and when anything was last sent."""
        stats = self.spool.stats()
        if stats.last_upload is None:
            last = self._("Nothing has been sent from this computer yet.")
        else:
            when = datetime.fromtimestamp(stats.last_upload, UTC).strftime("%Y-%m-%d %H:%M UTC")
            last = self._("Last sent: {when}").format(when=when)
        waiting = self._("Waiting to be sent: {reports} report(s), {deletions} deletion request(s).").format(
            reports=stats.reports, deletions=stats.deletions
        )
        sent = self.spool.db.read(lambda conn: count_sent(conn, self.clock()))
        recently = self._("Sent in the last 30 days: {reports} report(s), {deletions} deletion request(s).").format(
            reports=sent.get("report", 0), deletions=sent.get("deletion", 0)
        )
        see = self._("To see exactly what is waiting, run: ceip review; what was sent: ceip review --sent")
        return f"{waiting}\n{recently}\n{last}\n{see}"

    # -- what it does -------------------------------------------------------------------------------

    def set_participation(self, product: str, take_part: bool) -> str:
        """Opt ``product`` in (with every category) or out, the CLI's way, and say what that did in one or two
        sentences. Taking part when it takes part already changes nothing: the categories the person chose
        are never widened unasked."""
        if take_part and self.consent.allowed(product):
            return self.state_text(next(v for v in self.products() if v.id == product))
        try:
            change = self.consent.opt_in(product) if take_part else self.consent.opt_out(product)
        except ConsentError as exc:
            return self._("Could not change this: {reason}").format(reason=exc)
        self.plugins.consent_changed(product, change.after)
        return self.describe_change(change)

    def set_category(self, product: str, category: Category, send: bool) -> str:
        """Start or stop sending one category of ``product``'s information, as ``ceip consent in/out --only``
        does: stopping takes that category out of what is waiting (the product's declaration says which
        metric is of which category) and asks for what was sent of it to be deleted; stopping the last one
        is an opt-out. Only for a product that takes part; says what was done. A click that asks for what
        is already so (a window that had not yet shown a change made elsewhere) changes nothing: a consent
        change would start a new epoch, and the product's recorders would discard what they hold."""
        if not self.consent.allowed(product):
            return self._("Choose to take part first.")
        if (category in self.consent.categories(product)) == send:
            return self.state_text(next(v for v in self.products() if v.id == product))
        spec = self.plugins.products[product]
        try:
            if send:
                change = self.consent.opt_in(product, self.consent.categories(product) | {category}, spec=spec)
            else:
                change = self.consent.opt_out(product, [category], spec=spec)
        except ConsentError as exc:
            return self._("Could not change this: {reason}").format(reason=exc)
        self.plugins.consent_changed(product, change.after)
        return self.describe_change(change)

    def describe_change(self, change: Change) -> str:
        name = self.plugins.products[change.product].display_name
        if change.after is State.IN:
            text = self._("{product}: taking part. Thank you.").format(product=name)
            if change.guid_created:
                text += " " + self._("A new random machine ID was created.")
            if change.removed:
                withdrawn = ", ".join(self.heading(c) for c in Category if c.value in change.removed)
                text += " " + self._("No longer sent: {categories}.").format(categories=withdrawn)
                if change.reports_rewritten or change.reports_deleted:
                    text += " " + self._("Taken out of the reports that were waiting: {count}.").format(
                        count=change.reports_rewritten + change.reports_deleted
                    )
                if change.deletion_queued:
                    text += " " + self._("A request to delete what was already sent of it is queued.")
            return text
        parts = [self._("{product}: not taking part.").format(product=name)]
        if change.reports_deleted:
            parts.append(self._("Deleted the reports that were waiting: {count}.").format(count=change.reports_deleted))
        if change.deletion_queued:
            parts.append(self._("A request to delete what was already sent is queued."))
        if change.guid_discarded:
            parts.append(self._("No product takes part any more, so the machine ID was deleted."))
        return " ".join(parts)

    def reset_id(self) -> str:
        """Give the machine a new random ID (as ``ceip reset-id`` does)."""
        try:
            self.consent.reset_id()
        except ConsentError:
            return self._("There is no machine ID to reset: no product takes part.")
        return self._("The machine has a new random ID: future reports cannot be linked to earlier ones.")


class FirstRun:
    """The question a product asks once, at its first start: take part or not? Never asked again.

    Asked only while the person has made no choice for the product (through the dialog, the CLI or the
    product's own settings) and the machine's policy allows it; remembered in the state folder as soon as
    it is shown, so that a closed window, a crash or a second process never brings it back.
    """

    def __init__(self, options: OptionsModel, product: str) -> None:
        self.options = options
        self.product = product
        self.spec = options.plugins.product(product)
        self._ = options._

    def should_ask(self) -> bool:
        consent = self.options.consent
        if consent.state(self.product) is not State.UNSET or not consent.policy.allows(self.product):
            return False
        key = ASKED_KEY.format(product=self.product)
        return consent.db.read(lambda conn: conn.execute("SELECT 1 FROM meta WHERE key = ?", (key,)).fetchone()) is None

    def mark_asked(self) -> None:
        key = ASKED_KEY.format(product=self.product)

        def work(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, "1"))

        self.options.consent.db.write(work)

    def title(self) -> str:
        return self._("Help improve {product}?").format(product=self.spec.display_name)

    def question(self) -> str:
        return self._(
            "{product} can send anonymous reports about how it is used and how well it works, to help its "
            "makers improve it. Nothing that identifies you is sent. You will not be asked again; you can "
            "change your mind, or choose which kinds of information to send, at any time in the Customer "
            "Feedback Options."
        ).format(product=self.spec.display_name)

    def yes_label(self) -> str:
        return self._("Yes, take part")

    def no_label(self) -> str:
        return self._("No, thanks")

    def answer(self, take_part: bool) -> str:
        """Record the answer as a choice, as the dialog would (yes opts in; no opts out, which changes
        nothing else since nothing was recorded yet), and say what was done."""
        self.mark_asked()
        return self.options.set_participation(self.product, take_part)
