"""The machine's random identity (GUID) and its backup beside the database.

The GUID is a UUID4 made at the first opt-in. It is the only thing that ties one machine's reports
together, and it identifies no person. The database holds it; ``identity.json`` beside the database keeps
a copy of the GUID and the consent choices, so that a damaged database does not silently mint a new
identity or forget an opt-out.
"""

from __future__ import annotations

import os
from pathlib import Path

from ceip_core.lazylog import LazyLogger

log = LazyLogger(__name__)

BACKUP_NAME = "identity.json"


def new_guid() -> str:
    """A fresh random machine GUID."""
    import uuid  # json and uuid load only when the identity changes: not on the recording path

    return str(uuid.uuid4())


def write_backup(folder: Path, guid: str | None, consent: dict[str, str]) -> None:
    """Atomically replace the backup with the current GUID and consent states: per product ``in`` (all
    categories), ``in:<categories>`` (some: ``ceip_core.consent``) or ``out``."""
    import json

    from ceip_core.private_files import private_folder, write_private

    private_folder(folder)
    target = folder / BACKUP_NAME
    tmp = target.with_name(f".{BACKUP_NAME}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # left by a process of the same pid that died before the replace
    write_private(tmp, json.dumps({"guid": guid, "consent": consent}, sort_keys=True))
    os.replace(tmp, target)


def read_backup(folder: Path) -> tuple[str | None, dict[str, str]]:
    """The backed-up GUID and consent states (as :func:`write_backup` writes them); nothing if the backup is
    missing or unreadable, and no entry whose state is neither ``in``, ``in:...`` nor ``out``."""
    import json

    try:
        doc = json.loads((folder / BACKUP_NAME).read_text())
    except FileNotFoundError:
        return None, {}
    except (OSError, ValueError) as exc:
        log.warning("identity backup in %s is unreadable (%s); ignoring it", folder, exc)
        return None, {}
    guid = doc.get("guid") if isinstance(doc, dict) else None
    consent = doc.get("consent") if isinstance(doc, dict) else None
    if not isinstance(guid, str) or not _is_uuid(guid):
        guid = None
    if not isinstance(consent, dict):
        consent = {}
    return guid, {k: v for k, v in consent.items() if isinstance(k, str) and isinstance(v, str) and _is_state(v)}


def _is_state(value: str) -> bool:
    return value in ("in", "out") or value.startswith("in:")


def _is_uuid(text: str) -> bool:
    from ceip_core.records import is_uuid

    return is_uuid(text)
