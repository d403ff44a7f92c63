"""Per-product, voluntary, reversible participation, and the machine-wide policy that can cap it.

Every product starts *not participating*. Opting in creates the machine GUID if there is none. Opting out
is one transaction that records the choice, deletes everything still queued for the product and queues a
single deletion request; when no product remains opted in, the GUID is discarded. Because the spool
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
    from collections.abc import Callable, Mapping
    from datetime import datetime
    from typing import ClassVar, Protocol

    class ConsentListener(Protocol):
        """Anything with a ``consent_changed(allowed)`` method (recorders, the agent). ``allowed`` maps
        each product that may participate right now to its consent epoch."""

        def consent_changed(self, allowed: Mapping[str, int]) -> None: ...


log = LazyLogger(__name__)

#: Where an administrator puts the machine-wide policy, unless ``CEIP_POLICY_FILE`` names another.
DEFAULT_POLICY_FILE = Path("/etc/ceip/policy.toml")


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
    ) -> None:
        self.product = product
        self.before = before
        self.after = after
        self.guid_created = guid_created
        self.guid_discarded = guid_discarded
        self.reports_deleted = reports_deleted
        self.deletion_queued = deletion_queued

    def __repr__(self) -> str:
        return f"Change({vars(self)})"


def read_states(conn: sqlite3.Connection) -> dict[str, State]:
    """Every product with a recorded choice (products never touched are UNSET and absent)."""
    return {p: State(s) for p, s in conn.execute("SELECT product, state FROM consent")}


def read_epochs(conn: sqlite3.Connection) -> dict[str, int]:
    """The consent epoch of every opted-in product (see :func:`set_state`)."""
    return dict(conn.execute("SELECT product, epoch FROM consent WHERE state = 'in'").fetchall())


def set_state(conn: sqlite3.Connection, product: str, state: str) -> None:
    """Record a choice under a new epoch: a number, unique on this machine, that every change of any
    product's consent increases. Whoever read the epoch before recording data about a product can check
    at write time that consent was not withdrawn and given again in between (which a bare "is it in?"
    check cannot see)."""
    conn.execute(
        "INSERT OR REPLACE INTO consent (product, state, changed, epoch) "
        "VALUES (?, ?, ?, (SELECT COALESCE(MAX(epoch), 0) + 1 FROM consent))",
        (product, state, time.time()),
    )


def read_guid(conn: sqlite3.Connection) -> str | None:
    row = conn.execute("SELECT value FROM identity WHERE key = 'guid'").fetchone()
    return row[0] if row else None


def _restore_from_backup(folder: Path) -> Callable[[sqlite3.Connection], None]:
    """Called when the database is created afresh: bring back the GUID and choices from the backup."""

    def restore(conn: sqlite3.Connection) -> None:
        guid, states = identity.read_backup(folder)
        if guid is None:  # without the GUID a restored opt-in would participate with no identity: fail closed
            states = {p: s for p, s in states.items() if s != "in"}
        for product, state in sorted(states.items()):
            set_state(conn, product, state)
        if guid and "in" in states.values():
            conn.execute("INSERT OR REPLACE INTO identity (key, value) VALUES ('guid', ?)", (guid,))

    return restore


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

    def epoch(self, product: str) -> int | None:
        """The consent epoch of ``product`` if it may participate now, else None. Data recorded under an
        epoch may be spooled only while the epoch is unchanged (``Spool.put_report`` checks)."""
        if not self.policy.allows(product):
            return None
        return self.db.read(read_epochs).get(product)

    # -- changing -----------------------------------------------------------------------------------

    def opt_in(self, product: str) -> Change:
        """Start participating for ``product``; creates the GUID if this is the only opted-in product."""
        if not self.policy.allows(product):
            raise ConsentError(
                f"participation for {product!r} is switched off by machine policy ({self.policy.source})"
            )

        def work(conn: sqlite3.Connection) -> Change:
            before = read_states(conn).get(product, State.UNSET)
            created = False
            if read_guid(conn) is None:
                conn.execute("INSERT INTO identity (key, value) VALUES ('guid', ?)", (identity.new_guid(),))
                created = True
            set_state(conn, product, "in")
            self._backup(conn)
            return Change(product, before, State.IN, guid_created=created)

        return self.db.write(work)

    def opt_out(self, product: str) -> Change:
        """Stop participating for ``product``: delete its queued reports, queue one deletion request
        for what the receiver may hold, and discard the GUID if no product remains opted in."""
        from ceip_core.records import DeletionRequest  # the encoder is needed only when opting out
        from ceip_core.sent_history import forget_product
        from ceip_core.spool_rows import drop_partial, insert_item
        from ceip_core.wire import encode_item

        def work(conn: sqlite3.Connection) -> Change:
            states = read_states(conn)
            before = states.get(product, State.UNSET)
            set_state(conn, product, "out")
            deleted = conn.execute("DELETE FROM spool WHERE product = ? AND kind = 'report'", (product,)).rowcount
            drop_partial(conn, product)  # what `ceip agent --once` collected and has not sealed yet
            forget_product(conn, product)  # and what was sent: its history goes with the consent
            if deleted:
                conn.execute(
                    "INSERT INTO drops (reason, product, count) VALUES ('opted-out', ?, ?) "
                    "ON CONFLICT (reason, product) DO UPDATE SET count = count + excluded.count",
                    (product, deleted),
                )
            guid = read_guid(conn)
            queued = False
            if before is State.IN and guid is not None:
                request = DeletionRequest(identity.new_guid(), guid, product, _utcnow())
                insert_item(conn, request.request_id, "deletion", product, guid, encode_item(request))
                queued = True
            discarded = False
            if guid is not None and not any(s is State.IN for p, s in states.items() if p != product):
                conn.execute("DELETE FROM identity WHERE key = 'guid'")
                discarded = True
            self._backup(conn)
            return Change(product, before, State.OUT, False, discarded, deleted, queued)

        return self.db.write(work)

    def reset_id(self) -> str:
        """Replace the GUID with a fresh one, so that future reports cannot be linked to past ones.

        What was sent under the old GUID is deleted too, in the same transaction and before the old GUID
        is forgotten: one deletion request for (old GUID, product) is queued per product opted in, and
        reports still queued under the old GUID are dropped (``id-reset``), since one delivered after the
        deletion would bring the old identity back. Otherwise a later opt-out could delete only what the
        new GUID sent."""
        from ceip_core.records import DeletionRequest  # the encoder is needed only when the identity changes
        from ceip_core.sent_history import forget_guid
        from ceip_core.spool_rows import count_drop, insert_item
        from ceip_core.wire import encode_item

        def work(conn: sqlite3.Connection) -> str:
            old = read_guid(conn)
            if old is None:
                raise ConsentError("there is no machine GUID to reset: no product is opted in")
            for product, state in sorted(read_states(conn).items()):
                if state is State.IN:
                    request = DeletionRequest(identity.new_guid(), old, product, _utcnow())
                    insert_item(conn, request.request_id, "deletion", product, old, encode_item(request))
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
        states = {p: s.value for p, s in read_states(conn).items()}
        identity.write_backup(self.db.folder, read_guid(conn), states)


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


__all__ = ["Change", "Consent", "ConsentError", "ConsentWatcher", "Policy", "State"]
