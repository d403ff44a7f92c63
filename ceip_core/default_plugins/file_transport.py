"""The drop-folder transport (``file:///path/to/folder``): each batch becomes one gzip file.

For air-gapped machines (carry the folder to the receiving service and ``ceip import`` it) and for
tests. A batch file appears whole or not at all: it is written under a temporary name, flushed to disk,
then renamed. The write runs in a worker thread, which a cancelled send (an opt-out) does not stop, so
the worker checks before the rename whether the send was cancelled and then removes the temporary file
instead: a slow disk does not let a batch appear after the opt-out.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ceip_core.hookspecs import hookimpl
from ceip_core.transport import Batch, Outcome, SendResult, TransportFactory

#: Suffix of the files this transport writes; readers take only complete files with this suffix.
SUFFIX = ".ceip.json.gz"


def folder_of(url: str) -> Path:
    """The folder a ``file:`` URL (or a plain path) names."""
    parts = urlsplit(url)
    if parts.scheme not in ("", "file"):
        raise ValueError(f"not a file URL: {url!r}")
    if parts.netloc not in ("", "localhost"):
        raise ValueError(f"file URL {url!r} names a remote host; use file:///absolute/path")
    return Path(unquote(parts.path if parts.scheme else url))


def write_atomically(folder: Path, body: bytes, cancelled: threading.Event | None = None) -> Path | None:
    """Write ``body`` as a new batch file in ``folder`` and return its path; None, leaving nothing, if
    ``cancelled`` was set before the file was complete."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"batch-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:12]}{SUFFIX}"
    tmp = folder / f".{name}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    if cancelled is not None and cancelled.is_set():
        tmp.unlink()
        return None
    os.replace(tmp, folder / name)
    return folder / name


class FileTransport:
    """Writes batches into a folder. Every item of a written batch is accepted."""

    def __init__(self, url: str) -> None:
        self.folder = folder_of(url)

    async def send(self, batch: Batch) -> Sequence[SendResult]:
        import asyncio  # here, not at the top: sealing in a product's process loads this module

        cancelled = threading.Event()
        try:
            await asyncio.to_thread(write_atomically, self.folder, batch.body(), cancelled)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        except OSError as exc:
            return batch.results(Outcome.RETRY, f"cannot write to {self.folder}: {exc.strerror or exc}")
        return batch.results(Outcome.ACCEPTED)

    async def flush(self, timeout: float | None = None) -> bool:
        return True

    async def close(self) -> None:
        return None


@hookimpl
def ceip_register_transports(register: Callable[[str, TransportFactory], None]) -> None:
    register("file", FileTransport)
