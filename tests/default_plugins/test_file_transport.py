"""The drop-folder transport where the conformance suite cannot reach: a folder cannot hold a write open,
so a slow disk stands in for it here."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from ceip_core.conformance import report_item
from ceip_core.default_plugins.file_transport import FileTransport
from ceip_core.transport import Batch


async def test_a_send_cancelled_mid_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An opt-out cancels the send while the disk is still flushing: the worker thread cannot be stopped,
    but no batch file appears afterwards, and the temporary file is gone."""
    writing, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        writing.set()
        assert release.wait(10), "the test never released the write"
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    folder = tmp_path / "outbox"
    send = asyncio.ensure_future(FileTransport(folder.as_uri()).send(Batch([report_item()])))
    assert await asyncio.to_thread(writing.wait, 10)
    send.cancel()
    with pytest.raises(asyncio.CancelledError):
        await send
    release.set()
    deadline = asyncio.get_running_loop().time() + 10
    while any(p.name.endswith(".tmp") for p in folder.iterdir()):  # renamed or removed once fsync returns
        assert asyncio.get_running_loop().time() < deadline, "the worker never finished the write"
        await asyncio.sleep(0.01)
    assert list(folder.iterdir()) == []


async def test_an_uncancelled_send_writes_one_whole_file(tmp_path: Path) -> None:
    folder = tmp_path / "outbox"
    await FileTransport(folder.as_uri()).send(Batch([report_item()]))
    assert [p.name.endswith(".ceip.json.gz") and not p.name.startswith(".") for p in folder.iterdir()] == [True]
