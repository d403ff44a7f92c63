"""Conformance harnesses for the built-in transports (``ceip_core.conformance``): the drop folder, and the
fake receiving service over TLS."""

from __future__ import annotations

import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import orjson
from fake_service import Fail, FakeService

from ceip_core import wire
from ceip_core.default_plugins.file_transport import SUFFIX, FileTransport
from ceip_core.default_plugins.http_transport import HttpTransport
from ceip_core.testing import NotApplicable, TransportHarness
from ceip_core.transport import Transport


class FolderHarness(TransportHarness):
    """A drop folder. It takes every file whole, at once: it cannot ask for a delay, refuse an item or
    hold a write open. Unreachable: a file stands where the folder should be."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def make_transport(self) -> Transport:
        return FileTransport(self.folder.as_uri())

    async def accept(self) -> None:
        if self.folder.is_file():
            self.folder.unlink()

    async def retry_later(self, seconds: float) -> None:
        raise NotApplicable("a folder never asks the writer to wait")

    async def reject(self, reason: str, item_ids: Collection[str] | None = None) -> None:
        raise NotApplicable("a folder takes every file whole")

    async def stall(self) -> None:
        raise NotApplicable("a write to a local folder is not held open by the far end")

    def stalled(self) -> int:
        return 0

    async def unreachable(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.write_bytes(b"")  # the folder cannot be made: the path is a file

    def received(self) -> list[Any]:
        if not self.folder.is_dir():
            return []
        return [item for path in sorted(self.folder.glob(f"*{SUFFIX}")) for item in wire.read_body(path.read_bytes())]


class ServiceHarness(TransportHarness):
    """The fake receiving service over TLS with its own self-signed certificate (the ``?ca=`` option)."""

    def __init__(self, service: FakeService, ca: Path) -> None:
        self.service = service
        self.ca = ca

    def make_transport(self) -> Transport:
        return HttpTransport(f"{self.service.url}?ca={self.ca}", timeout=30.0)

    async def accept(self) -> None:
        self.service.always, self.service.hang, self.service.reject_ids = None, False, {}

    async def retry_later(self, seconds: float) -> None:
        self.service.always = Fail(status=503, headers={"Retry-After": str(int(seconds))})

    async def reject(self, reason: str, item_ids: Collection[str] | None = None) -> None:
        if item_ids is None:
            self.service.always = Fail(status=400, body=orjson.dumps({"error": reason, "detail": "for good"}))
        else:
            self.service.reject_ids = dict.fromkeys(item_ids, reason)

    async def stall(self) -> None:
        self.service.hang = True

    def stalled(self) -> int:
        return self.service.hanging - len(self.service.disconnected)

    async def unreachable(self) -> None:
        self.service.stop()

    def received(self) -> list[Any]:
        return list(self.service.stored.values())
