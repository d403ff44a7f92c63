"""A throw-away PostgreSQL cluster for the service tests, made with Debian's ``initdb`` and ``pg_ctl``."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from service.factory import free_port


def _postgres_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql, or set CEIP_TEST_POSTGRES_URL")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _real_clock() -> dict[str, str]:
    """This environment without libfaketime: the server always runs on the real clock.

    Under ``.ci/clock`` libfaketime stops PostgreSQL's timers, so its deadlock check never runs and two
    workers that deadlock wait for each other until a request times out. ceip never reads the database's
    clock (every time it stores comes from the service), so a server on another clock also shows that.
    """
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")}


class Cluster:
    """A throw-away PostgreSQL cluster in a temporary folder, on a free loopback port."""

    def __init__(self, *, fsync: bool = False) -> None:
        """:param fsync: whether the server flushes to disk (off by default: the tests' own speed; on for
        the tests that check what an acknowledgement promises)."""
        self.fsync = fsync
        self.bindir = _postgres_bin()
        self.folder = Path(tempfile.mkdtemp(prefix="ceip-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(self.folder, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.folder / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _run(self, program: str, *args: object) -> None:
        command = [*self.as_user, self.bindir / program, *args]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_real_clock())

    def start(self) -> None:
        fsync = "on" if self.fsync else "off"
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -c fsync={fsync} -c max_connections=200"
        self._run("pg_ctl", "-D", self.data, "-l", self.folder / "log", "-w", "-o", options, "start")

    def crash(self) -> None:
        """Kill the server without a shutdown, as a power cut or an OOM kill would: SIGKILL to the postmaster
        and every backend, so nothing is flushed on the way out."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        subprocess.run(["pkill", "-KILL", "-P", str(pid)], check=False)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (self.data / "postmaster.pid").exists() and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (self.data / "postmaster.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
