"""Put reports for ``sample`` into the spool of ``$CEIP_HOME`` as fast as possible (for tests/test_statedb.py).

Usage: ``python spool_writer.py PREFIX COUNT [--ack] [--barrier] [--guid=GUID]``

- Item ids are ``PREFIX-0``, ``PREFIX-1``, ...; ``COUNT`` 0 means: until killed.
- ``--ack`` prints each item id on stdout (flushed) only *after* ``put_report`` returned True, so every
  printed id is one the spool acknowledged.
- ``--barrier`` prints ``ready`` once the spool is open and waits for a line on stdin before writing, so
  that a test can start several writers at the same moment.
- ``--guid=GUID`` uses that GUID instead of reading it, so that nothing touches the database before the
  first ``put_report`` (to race several processes into a damaged database).

Quotas are lifted: a test counting acknowledged ids must not see them pushed out by a quota.
Exits with status 3 if the spool refuses a report (the product must be opted in beforehand).
"""

from __future__ import annotations

import sys

from ceip_core.consent import read_epochs
from ceip_core.spool import Quotas, Spool
from ceip_core.statedb import StateDB


def main(argv: list[str]) -> int:
    prefix, count = argv[0], int(argv[1])
    ack, barrier = "--ack" in argv, "--barrier" in argv
    given = [a.split("=", 1)[1] for a in argv if a.startswith("--guid=")]
    spool = Spool(StateDB(), quotas=Quotas(max_reports=10**9, max_bytes=10**15, max_age_s=1e12))
    guid = given[0] if given else spool.consent.guid()
    if barrier:
        print("ready", flush=True)
        sys.stdin.readline()
    i = 0
    while count == 0 or i < count:
        item_id = f"{prefix}-{i}"
        if not spool.put_report(
            item_id, "sample", guid or "", b'{"n": %d}' % i, consent_epoch=spool.db.read(read_epochs).get("sample", 0)
        ):
            print(f"spool refused {item_id}", file=sys.stderr)
            return 3
        if ack:
            print(item_id, flush=True)
        i += 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
