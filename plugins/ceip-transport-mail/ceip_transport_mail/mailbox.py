"""The collecting side: take the items out of the messages a mailbox received, as files ``ceip import``
reads.

    python -m ceip_transport_mail.mailbox MAILBOX FOLDER

``MAILBOX`` is a Maildir folder or an mbox file. Each message the mail transport sent has one attachment
``<item id>.ceip.json.gz``; it is written to ``FOLDER/<item id>.ceip.json.gz``, so a message that arrived
twice makes one file. Anything else in the mailbox (bounces, spam, a message whose attachment is not a
readable batch) is skipped and counted, never written: the receiving service validates what it imports
again in any case.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import sys
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

from ceip_core import wire
from ceip_core.default_plugins.file_transport import SUFFIX


def extract(message: bytes) -> tuple[str, bytes] | None:
    """The item id and batch body a message carries, or None if it is not a readable ceip message."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    if not isinstance(parsed, EmailMessage):
        return None
    for part in parsed.iter_attachments():
        name = part.get_filename() or ""
        if not name.endswith(SUFFIX):
            continue
        try:
            item_id = str(uuid.UUID(name.removesuffix(SUFFIX)))  # a file name, never a path
        except ValueError:
            return None
        body = part.get_payload(decode=True)
        if not isinstance(body, bytes) or len(body) > wire.MAX_COMPRESSED_BYTES:
            return None
        try:
            wire.read_body(body)
        except wire.WireError:
            return None
        return item_id, body
    return None


def _messages(source: Path) -> Iterator[bytes]:
    box: mailbox.Mailbox = mailbox.Maildir(source, create=False) if source.is_dir() else mailbox.mbox(source)
    for key in box.iterkeys():
        yield box.get_bytes(key)


def unpack(source: Path, folder: Path) -> tuple[int, int]:
    """Write the item of every ceip message in ``source`` into ``folder``; returns (written, skipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = skipped = 0
    for message in _messages(source):
        found = extract(message)
        if found is None:
            skipped += 1
            continue
        item_id, body = found
        tmp = folder / f".{item_id}.tmp"
        tmp.write_bytes(body)
        os.replace(tmp, folder / f"{item_id}{SUFFIX}")
        written += 1
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m ceip_transport_mail.mailbox MAILBOX FOLDER", file=sys.stderr)
        return 2
    source, folder = Path(args[0]), Path(args[1])
    if not source.exists():
        print(f"no mailbox at {source}: give a Maildir folder or an mbox file", file=sys.stderr)
        return 2
    written, skipped = unpack(source, folder)
    print(f"{written} items written to {folder}, {skipped} messages skipped; next: ceip import {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
