"""Per-product, voluntary, reversible participation, and the machine-wide policy that can cap it.

Every product starts *not participating*. Opting in creates the machine GUID if there is none. Opting out
is one transaction that records the choice, deletes everything still queued for the product and queues a
single deletion request; when no product remains opted in, the GUID is discarded.

A person may take part with some categories of information only (``ceip_core.records.Category``:
configuration, performance and reliability, program use). Each change of a product's categories is a
consent change under a new epoch, like an opt-out and an opt-in, so whatever was recorded before it can
no longer be queued. Narrowing them (giving up a category) behaves as an opt-out of what the category
covered, in one transaction: the product's queued reports are rewritten without that category's data
(those left empty are deleted), the agent's unsealed aggregate is dropped, the product's sent history
goes, and one deletion request naming the categories is queued. Because the spool
lives in the same database and checks consent inside its own write transaction, no process on the
machine can queue a report for the product once the opt-out has committed. Processes that hold
in-memory data (recorders, the agent) learn of the change through :class:`ConsentWatcher` within a
fraction of a second.

Standard library only, so that a product's process can read consent cheaply.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from ceip_core import identity
from ceip_core.lazylog import LazyLogger
from ceip_core.statedb import StateDB

TYPE_CHECKING = False  # typing, dataclasses and logging together cost more than the recording path's budget
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime
    from typing import ClassVar, Protocol

    from ceip_core.records import Category, ProductSpec

    class ConsentListener(Protocol):
        """Anything with a ``consent_changed(allowed)`` method (recorders, the agent). ``allowed`` maps
        each product that may participate right now to its consent epoch."""

        def consent_changed(self, allowed: Mapping[str, int]) -> None: ...


log = LazyLogger(__name__)

#: Where an administrator puts the machine-wide policy, unless ``CEIP_POLICY_FILE`` names another.
DEFAULT_POLICY_FILE = Path("/etc/ceip/policy.toml")


#: The values of ``ceip_core.records.Category``, in its order, spelled out here so that reading consent
#: needs no attrs (a test holds the two to each other). The database and the backup store these.
ALL_CATEGORIES: tuple[str, ...] = ("configuration", "performance and reliability", "program use")


def _stored(categories: frozenset[str] | None) -> str | None:
    """Categories as the consent table keeps them: NULL for all, else the values joined by commas."""
    if categories is None or set(ALL_CATEGORIES) <= categories:
        return None
    return ",".join(c for c in ALL_CATEGORIES if c in categories)


def _parsed(text: str | None) -> frozenset[str] | None:
    """The categories a stored value names (None: all). A value this version does not know is left out:
    a damaged or newer entry never widens consent."""
    if text is None:
        return None
    return frozenset(c for c in text.split(",") if c in ALL_CATEGORIES)


#: The diagnostics key under which a queued report rewritten by a narrowing counts the parts taken out.
NARROWED = "consent.narrowed"


class State(enum.Enum):
    """A person's choice for one product."""

    UNSET = "unset"
    IN = "in"
    OUT = "out"


class ConsentError(Exception):
    """A consent change that cannot be made, with the reason in words."""


class Policy:
    """The machine-wide cap an administrator sets: it can only switch participation off, never on.

    Sources, strongest first: ``CEIP_CONSENT_CAP=off`` in the environment switches every product off;
    the TOML policy file can switch all (``force_off = true``) or some (``force_off_products``) off.
    """

    __slots__ = ("force_off", "off_products", "source")

    def __init__(self, force_off: bool = False, off_products: frozenset[str] = frozenset(), source: str = "none"):
        self.force_off = force_off
        self.off_products = off_products
        self.source = source

    def __repr__(self) -> str:
        return f"Policy(force_off={self.force_off}, off_products={set(self.off_products)}, source={self.source!r})"

    def allows(self, product: str) -> bool:
        return not self.force_off and product not in self.off_products

    @classmethod
    def load(cls) -> Policy:
        """Read the policy from the environment and the policy file. A malformed file caps everything
        off (fail closed) and says why in the log."""
        if os.environ.get("CEIP_CONSENT_CAP", "").strip().lower() in ("off", "0", "false", "no"):
            return cls(force_off=True, source="environment CEIP_CONSENT_CAP")
        path = Path(os.environ.get("CEIP_POLICY_FILE") or DEFAULT_POLICY_FILE)
        try:
            text = path.read_text()
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("policy file %s is unreadable (%s); participation is off until it is fixed", path, exc)
            return cls(force_off=True, source=f"{path} (unreadable)")
        import tomllib  # only where a policy file exists

        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            log.error("policy file %s is unreadable (%s); participation is off until it is fixed", path, exc)
            return cls(force_off=True, source=f"{path} (unreadable)")
        section = doc.get("consent", {})
        products = section.get("force_off_products", []) if isinstance(section, dict) else None
        if not isinstance(products, list):
            log.error("policy file %s: [consent] is malformed; participation is off until it is fixed", path)
            return cls(force_off=True, source=f"{path} (malformed)")
        return cls(
            force_off=section.get("force_off") is True,
            off_products=frozenset(str(p) for p in products),
            source=str(path),
        )


class Change:
    """What a consent change did, for the CLI and the lifecycle hook."""

    def __init__(
        self,
        product: str,
        before: State,
        after: State,
        guid_created: bool = False,
        guid_discarded: bool = False,
        reports_deleted: int = 0,
        deletion_queued: bool = False,
        *,
        categories: tuple[str, ...] | None = None,
        removed: tuple[str, ...] = (),
        reports_rewritten: int = 0,
    ) -> None:
        self.product = product
        self.before = before
        self.after = after
        self.guid_created = guid_created
        self.guid_discarded = guid_discarded
        self.reports_deleted = reports_deleted
        self.deletion_queued = deletion_queued
        self.categories = categories
        """The categories consented to afterwards (values of ``Category``), None for all (or none, if out)."""
        self.removed = removed
        """The categories this change withdrew while the product stays in (a narrowing)."""
        self.reports_rewritten = reports_rewritten
        """Queued reports rewritten without the withdrawn categories' data."""

    def __repr__(self) -> str:
        return f"Change({vars(self)})"


def read_states(conn: sqlite3.Connection) -> dict[str, State]:
    """Every product with a recorded choice (products never touched are UNSET and absent)."""
    return {p: State(s) for p, s in conn.execute("SELECT product, state FROM consent")}


def read_epochs(conn: sqlite3.Connection) -> dict[str, int]:
    """The consent epoch of every opted-in product (see :func:`set_state`)."""
    return dict(conn.execute("SELECT product, epoch FROM consent WHERE state = 'in'").fetchall())


def read_categories(conn: sqlite3.Connection) -> dict[str, frozenset[str] | None]:
    """The categories of every opted-in product (values of ``Category``; None: all of them)."""
    rows = conn.execute("SELECT product, categories FROM consent WHERE state = 'in'").fetchall()
    return {product: _parsed(text) for product, text in rows}


def read_consented(conn: sqlite3.Connection, product: str) -> tuple[int, frozenset[str] | None] | None:
    """The consent epoch and categories of ``product`` if it is opted in, read together: what sealing
    scrubs a report against (the spool then checks that the epoch still holds when it writes)."""
    row = conn.execute(
        "SELECT epoch, categories FROM consent WHERE product = ? AND state = 'in'", (product,)
    ).fetchone()
    return None if row is None else (row[0], _parsed(row[1]))


def set_state(conn: sqlite3.Connection, product: str, state: str, categories: frozenset[str] | None = None) -> None:
    """Record a choice (and, for ``in``, its categories, None for all) under a new epoch: a number, unique
    on this machine, that every change of any product's consent increases. Whoever read the epoch before
    recording data about a product can check at write time that consent was not withdrawn, narrowed, or
    given again in between (which a bare "is it in?" check cannot see)."""
    conn.execute(
        "INSERT OR REPLACE INTO consent (product, state, changed, epoch, categories) "
        "VALUES (?, ?, ?, (SELECT COALESCE(MAX(epoch), 0) + 1 FROM consent), ?)",
        (product, state, time.time(), _stored(categories) if state == "in" else None),
    )


def read_guid(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM identity WHERE key = 'guid'").fetchone()
    return row[0] if row else None


def _restore_from_backup(folder: Path) -> Callable[[sqlite3.Connection], None]:
    """Called when the database is created afresh: bring back the GUID and choices from the backup."""

    def restore(conn: sqlite3.Connection) -> None:
        guid, backed_up = identity.read_backup(folder)
        restored = False
        for product, entry in sorted(backed_up.items()):
            state, categories = _backup_entry(entry)
            if state == "in" and (guid is None or categories == frozenset()):
                # Without the GUID a restored opt-in would participate with no identity, and an entry
                # whose categories are all unknown names nothing: fail closed, the product is not restored.
                continue
            set_state(conn, product, state, categories)
            restored = restored or state == "in"
        if guid and restored:
            conn.execute("INSERT OR REPLACE INTO identity (key, value) VALUES ('guid', ?)", (guid,))

    return restore


def _backup_value(state: State, categories: frozenset[str] | None) -> str:
    """A choice as the backup keeps it: ``in`` (all categories), ``in:<categories>`` or ``out``. A version
    of ceip without categories reads only ``in`` and ``out``, so it never takes a narrowed choice for more."""
    stored = _stored(categories) if state is State.IN else None
    return state.value if stored is None else f"in:{stored}"


def _backup_entry(value: str) -> tuple[str, frozenset[str] | None]:
    """The state and categories of a backup value (:func:`_backup_value`); unknown category names are left
    out, so a damaged entry restores less, never more (an empty set: nothing at all)."""
    state, _, categories = value.partition(":")
    return state, (_parsed(categories) if _ else None)


class Consent:
    """Reads and changes consent in one state folder. Use one object per thread."""

    def __init__(self, db: StateDB | None = None, policy: Policy | None = None) -> None:
        self.db = db or StateDB()
        self.policy = policy or Policy.load()
        self.db.on_recreate.append(_restore_from_backup(self.db.folder))

    # -- reading ------------------------------------------------------------------------------------

    def state(self, product: str) -> State:
        """The person's choice for ``product`` (the policy may still cap it; see :meth:`allowed`)."""
        return self.states().get(product, State.UNSET)

    def states(self) -> dict[str, State]:
        return self.db.read(read_states)

    def allowed(self, product: str) -> bool:
        """True only if the person opted in and the machine policy does not cap the product off."""
        return self.policy.allows(product) and self.state(product) is State.IN

    def guid(self) -> str | None:
        """The machine GUID, or None while no product is opted in."""
        return self.db.read(read_guid)

    def categories(self, product: str) -> frozenset[Category]:
        """The categories ``product`` takes part with: all of them after a plain opt-in, none while it is
        not opted in (or the machine policy caps it)."""
        if not self.allowed(product):
            return frozenset()
        return _records_categories(_or_all(self.db.read(read_categories).get(product)))

    def epoch(self, product: str) -> int | None:
        """The consent epoch of ``product`` if it may participate now, else None. Data recorded under an
        epoch may be spooled only while the epoch is unchanged (``Spool.put_report`` checks)."""
        if not self.policy.allows(product):
            return None
        return self.db.read(read_epochs).get(product)

    # -- changing -----------------------------------------------------------------------------------

    def opt_in(
        self, product: str, categories: Iterable[Category] | None = None, *, spec: ProductSpec | None = None
    ) -> Change:
        """Start participating for ``product``, with ``categories`` only (None: all of them); creates the
        GUID if this is the only opted-in product. Consent for fewer categories than before narrows it
        (see :meth:`opt_out`, whose ``spec`` this takes too); an empty set is an opt-out."""
        if not self.policy.allows(product):
            raise ConsentError(
                f"participation for {product!r} is switched off by machine policy ({self.policy.source})"
            )
        wanted = _values(categories)
        return self.db.write(lambda conn: self._change(conn, product, lambda _current: wanted, spec))

    def opt_out(
        self, product: str, categories: Iterable[Category] | None = None, *, spec: ProductSpec | None = None
    ) -> Change:
        """Stop participating for ``product``: delete its queued reports, queue one deletion request
        for what the receiver may hold, and discard the GUID if no product remains opted in.

        With ``categories``, stop for those only (narrowing): in the same transaction the product's queued
        reports are rewritten without their data (decoded and encoded again by the wire format, under the
        same report id) and deleted if nothing is left, the agent's unsealed aggregate and the product's
        sent history are dropped, and one deletion request naming the categories is queued. ``spec``, the
        product's declaration, says which metric belongs to which category; without it the queued reports
        of the product are deleted whole (fail closed). Withdrawing every category left is an opt-out, and
        so is withdrawing categories of a product that is not opted in."""
        if categories is None:
            return self.db.write(lambda conn: self._out(conn, product))
        withdrawn = frozenset(c.value for c in categories)

        def left(current: frozenset[str] | None) -> frozenset[str]:
            return frozenset(ALL_CATEGORIES if current is None else current) - withdrawn

        return self.db.write(lambda conn: self._change(conn, product, left, spec, narrowing=True))

    def _change(
        self,
        conn: sqlite3.Connection,
        product: str,
        wanted: Callable[[frozenset[str] | None], frozenset[str] | None],
        spec: ProductSpec | None,
        *,
        narrowing: bool = False,
    ) -> Change:
        """Inside a write transaction: consent to the categories ``wanted`` makes of the current ones
        (read in this same transaction, so a concurrent change is never undone), taking out what they
        leave out. An opt-out if nothing is left, or if only ``narrowing`` a product that is not in."""
        before = read_states(conn).get(product, State.UNSET)
        current = read_categories(conn).get(product)
        after = _normal(wanted(current))
        if after == frozenset() or (narrowing and before is not State.IN):
            return self._out(conn, product)
        created = False
        if read_guid(conn) is None:
            conn.execute("INSERT INTO identity (key, value) VALUES ('guid', ?)", (identity.new_guid(),))
            created = True
        narrowed = self._narrow(conn, product, current, after, spec) if before is State.IN else _Narrowed()
        set_state(conn, product, "in", after)
        self._backup(conn)
        return Change(
            product,
            before,
            State.IN,
            guid_created=created,
            reports_deleted=narrowed.deleted,
            deletion_queued=narrowed.queued,
            categories=_listed(after),
            removed=_listed(narrowed.removed) or (),
            reports_rewritten=narrowed.rewritten,
        )

    def _out(self, conn: sqlite3.Connection, product: str) -> Change:
        """Inside a write transaction: the opt-out of ``product`` (see :meth:`opt_out`)."""
        from ceip_core.sent_history import forget_product
        from ceip_core.spool_rows import count_drop, drop_partial

        states = read_states(conn)
        before = states.get(product, State.UNSET)
        set_state(conn, product, "out")
        deleted = conn.execute("DELETE FROM spool WHERE product = ? AND kind = 'report'", (product,)).rowcount
        drop_partial(conn, product)  # what `ceip agent --once` collected and has not sealed yet
        forget_product(conn, product)  # and what was sent: its history goes with the consent
        count_drop(conn, "opted-out", product, deleted)
        guid = read_guid(conn)
        queued = False
        if before is State.IN and guid is not None:
            _queue_deletion(conn, guid, product)
            queued = True
        discarded = False
        if guid is not None and not any(s is State.IN for p, s in states.items() if p != product):
            conn.execute("DELETE FROM identity WHERE key = 'guid'")
            discarded = True
        self._backup(conn)
        return Change(product, before, State.OUT, False, discarded, deleted, queued)

    @staticmethod
    def _narrow(
        conn: sqlite3.Connection,
        product: str,
        before: frozenset[str] | None,
        after: frozenset[str] | None,
        spec: ProductSpec | None,
    ) -> _Narrowed:
        """Inside the caller's transaction: take what the categories in ``before`` and not in ``after``
        covered out of the machine (see :meth:`opt_out`). Nothing to do when no category is withdrawn."""
        removed = _or_all(before) - _or_all(after)
        if not removed:
            return _Narrowed()
        import attrs

        from ceip_core.records import Report, holds_data, only_categories
        from ceip_core.sent_history import forget_product
        from ceip_core.spool_rows import count_drop, drop_partial
        from ceip_core.wire import WireError, decode_item, encode_item

        keep = _records_categories(_or_all(after))
        rewritten, gone = 0, []
        rows = conn.execute("SELECT item_id, data FROM spool WHERE product = ? AND kind = 'report'", (product,))
        for item_id, data in rows.fetchall():
            try:
                report = decode_item(bytes(data))
            except WireError:
                report = None
            if spec is None or not isinstance(report, Report) or report.product != spec.id:
                gone.append(item_id)
                continue
            had = (
                _records_categories(frozenset(ALL_CATEGORIES))
                if report.categories is None
                else frozenset(report.categories)
            )
            stripped, n = only_categories(report, spec.category_of, keep)
            if not holds_data(stripped):
                gone.append(item_id)
                continue
            if n:  # counted, as every drop is: the report says how much was taken out after it was sealed
                counts = dict(stripped.diagnostics)
                counts[NARROWED] = counts.get(NARROWED, 0) + n
                stripped = attrs.evolve(stripped, diagnostics=dict(sorted(counts.items())))
            stripped = attrs.evolve(stripped, categories=had & keep)
            encoded = encode_item(stripped)
            conn.execute("UPDATE spool SET data = ?, size = ? WHERE item_id = ?", (encoded, len(encoded), item_id))
            rewritten += 1
        conn.executemany("DELETE FROM spool WHERE item_id = ?", [(i,) for i in gone])
        count_drop(conn, "consent-narrowed", product, len(gone))
        drop_partial(conn, product)  # collected under the old epoch: the agent would discard it anyway
        forget_product(conn, product)  # the sent history holds the withdrawn categories' data too
        guid = read_guid(conn)
        queued = False
        if guid is not None:
            _queue_deletion(conn, guid, product, [c for c in ALL_CATEGORIES if c in removed])
            queued = True
        return _Narrowed(removed, rewritten, len(gone), queued)

    def reset_id(self) -> str:
        """Replace the GUID with a fresh one, so that future reports cannot be linked to past ones.

        What was sent under the old GUID is deleted too, in the same transaction and before the old GUID
        is forgotten: one deletion request for (old GUID, product) is queued per product opted in, and
        reports still queued under the old GUID are dropped (``id-reset``), since one delivered after the
        deletion would bring the old identity back. Otherwise a later opt-out could delete only what the
        new GUID sent."""
        from ceip_core.sent_history import forget_guid
        from ceip_core.spool_rows import count_drop

        def work(conn: sqlite3.Connection) -> str:
            old = read_guid(conn)
            if old is None:
                raise ConsentError("there is no machine GUID to reset: no product is opted in")
            for product, state in sorted(read_states(conn).items()):
                if state is State.IN:
                    _queue_deletion(conn, old, product)
            queued = conn.execute(
                "SELECT product, COUNT(*) FROM spool WHERE kind = 'report' AND guid = ? GROUP BY product", (old,)
            ).fetchall()
            conn.execute("DELETE FROM spool WHERE kind = 'report' AND guid = ?", (old,))
            forget_guid(conn, old)  # the history of what the old identity sent goes with it
            for product, n in queued:
                count_drop(conn, "id-reset", product, n)
            guid = identity.new_guid()
            conn.execute("UPDATE identity SET value = ? WHERE key = 'guid'", (guid,))
            self._backup(conn)
            return guid

        return self.db.write(work)

    def _backup(self, conn: sqlite3.Connection) -> None:
        """Written inside the transaction, before it commits: an opt-out is on disk in the backup even if
        the commit is then lost, so a damaged database can never bring back a withdrawn consent."""
        categories = read_categories(conn)
        states = {p: _backup_value(s, categories.get(p)) for p, s in read_states(conn).items()}
        identity.write_backup(self.db.folder, read_guid(conn), states)


class _Narrowed:
    """What :meth:`Consent._narrow` did."""

    def __init__(
        self, removed: frozenset[str] = frozenset(), rewritten: int = 0, deleted: int = 0, queued: bool = False
    ) -> None:
        self.removed = removed
        self.rewritten = rewritten
        self.deleted = deleted
        self.queued = queued


def _values(categories: Iterable[Category] | None) -> frozenset[str] | None:
    """Categories as the values consent stores (None: all)."""
    return None if categories is None else _normal(frozenset(c.value for c in categories))


def _normal(values: frozenset[str] | None) -> frozenset[str] | None:
    """All categories are spelled None; unknown names are left out."""
    if values is None or set(ALL_CATEGORIES) <= values:
        return None
    return frozenset(values) & frozenset(ALL_CATEGORIES)


def _or_all(values: frozenset[str] | None) -> frozenset[str]:
    return frozenset(ALL_CATEGORIES) if values is None else values


def _listed(values: frozenset[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(c for c in ALL_CATEGORIES if c in values)


def _records_categories(values: frozenset[str]) -> frozenset[Category]:
    """The ``records.Category`` members of stored values (attrs is loaded here, never on the recording path)."""
    from ceip_core.records import Category

    return frozenset(c for c in Category if c.value in values)


def _queue_deletion(conn: sqlite3.Connection, guid: str, product: str, categories: list[str] | None = None) -> None:
    """Queue one deletion request for (``guid``, ``product``), of ``categories`` only (values of
    ``records.Category``; None: everything), inside the caller's transaction. Its bytes come from
    ``deletion_wire``, without the records' libraries: an opt-out must answer at once (issue 11)."""
    from ceip_core import deletion_wire
    from ceip_core.spool_rows import insert_item

    request_id = identity.new_guid()
    data = deletion_wire.encode(request_id, guid, product, _utcnow(), categories)
    insert_item(conn, request_id, "deletion", product, guid, data)


def _utcnow() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class ConsentWatcher:
    """Tells callbacks within ``interval`` seconds when any process changes consent in a state folder.

    One daemon thread per folder and process polls SQLite's ``data_version`` (a counter that moves when
    another connection commits), so an idle watcher costs one tiny query per interval and no disk reads.
    Callbacks get the allowed products with their epochs and must be quick; they run on the watcher thread.
    """

    _instances: ClassVar[dict[Path, ConsentWatcher]] = {}
    _lock = threading.Lock()

    def __init__(self, folder: Path, interval: float = 0.2) -> None:
        self.folder = folder
        self.interval = interval
        self._callbacks: weakref.WeakSet[ConsentListener] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.allowed: Mapping[str, int] = {}

    @classmethod
    def shared(cls, folder: Path) -> ConsentWatcher:
        """The process-wide watcher for ``folder``, started on first use."""
        with cls._lock:
            watcher = cls._instances.get(folder)
            if watcher is None:
                watcher = cls._instances[folder] = cls(folder)
            return watcher

    def subscribe(self, listener: ConsentListener) -> Mapping[str, int]:
        """Add ``listener`` (held weakly) and return the products allowed right now, with their epochs.

        The answer is read afresh, not taken from the watcher's last poll, so a recorder created just
        after an opt-in records from its first call. The watcher's own state is left alone: it is what
        the next poll compares against, and every earlier listener must still hear of a change.
        """
        db = StateDB(self.folder)
        try:
            fresh = self._read_allowed(Consent(db))
        finally:
            db.close()
        self._callbacks.add(listener)
        if self._thread is None or not self._thread.is_alive():
            self.allowed = fresh
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="ceip-consent-watcher", daemon=True)
            self._thread.start()
        return fresh

    def stop(self) -> None:
        self._stop.set()

    @staticmethod
    def _read_allowed(consent: Consent) -> Mapping[str, int]:
        consent.policy = Policy.load()
        epochs = consent.db.read(read_epochs)
        return {p: e for p, e in sorted(epochs.items()) if consent.policy.allows(p)}

    def _run(self) -> None:
        consent = Consent(StateDB(self.folder))
        version = None
        ticks = 0
        while not self._stop.wait(self.interval):
            ticks += 1
            try:
                current = consent.db.connect().execute("PRAGMA data_version").fetchone()[0]
                # The database tells us about commits; the policy file is re-read every few seconds.
                if current == version and ticks % 10:
                    continue
                version = current
                allowed = self._read_allowed(consent)
            except Exception:  # a damaged or vanished database means: nothing is allowed
                log.exception("consent watcher could not read %s", self.folder)
                consent.db.close()
                allowed = {}
            if allowed != self.allowed:
                self.allowed = allowed
                for listener in list(self._callbacks):
                    try:
                        listener.consent_changed(allowed)
                    except Exception:
                        log.exception("consent listener failed")


__all__ = ["ALL_CATEGORIES", "Change", "Consent", "ConsentError", "ConsentWatcher", "Policy", "State"]
