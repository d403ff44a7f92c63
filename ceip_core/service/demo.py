"""``ceip demo``: the real thing on one machine in a few seconds, in a throw-away state folder.

It opts the installed products in and allowlists their executables, starts ``ceip agent`` as a process of
its own, launches each product's stand-in executable (installed with its plugin under the product's
executable name; it records through the public recording API, see ``ceip_core.standin``) and one that
crashes, waits until the agent has seen every one of them end, and stops the agent, which seals what it
holds. What is left in the spool is what ``ceip review`` shows; the demo only says how much it is
(:func:`queued`), and which command shows it.

Then the vendor's side (:func:`populate`): it starts ``ceip serve`` on loopback with its data in the
state folder, sends it a simulated fleet (``ceip_core.service.fleet``: its reports, then the deletion requests of
the machines that opted out) and a copy of this machine's own queued reports through the HTTP transport
and ``POST /v1/reports``, the way machines do, and prints the dashboard's address and the token to log in
with. This machine's reports stay queued, so the README's tour (``ceip review``, ``ceip consent out``,
``ceip upload``) works on them afterwards; sending them again is harmless, since the service keeps one
copy of each report id.

The demo does not collect the exit status of the stand-ins it started until the agent has seen them end:
that is what lets the agent tell a normal end from a crash (see ``process_observer``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from attrs import frozen

from ceip_core import wire
from ceip_core.agent import read_status
from ceip_core.allowlist import Allowlist, default_path, make_entry
from ceip_core.consent import Consent
from ceip_core.plugins import Plugins
from ceip_core.records import ProductSpec
from ceip_core.service import fleet
from ceip_core.spool import Spool
from ceip_core.statedb import StateDB
from ceip_core.transport import Batch, BatchItem, Outcome

#: How often the demo's agent looks at the processes, in seconds.
POLL_S = 0.2
#: The simulated fleet the dashboard shows: machines, and days back from today.
FLEET_MACHINES = 200
FLEET_DAYS = 30
#: The service's folder (query token, database, log) inside the demo's state folder.
SERVICE_FOLDER = "service"


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def standin_executable(spec: ProductSpec) -> str | None:
    """The product's stand-in, installed beside this interpreter under one of its executable names."""
    folder = str(Path(sys.executable).parent)
    return next((found for name in spec.executables if (found := shutil.which(name, path=folder))), None)


def run(plugins: Plugins, folder: Path, seconds: float, echo: Callable[[str], None]) -> None:
    """Play the demo in state folder ``folder``, telling what happens through ``echo``."""
    specs = list(plugins.products.values())
    consent = Consent(StateDB(folder))
    for spec in specs:
        consent.opt_in(spec.id)
    path = default_path(folder)
    Allowlist.read(path).add(make_entry(s.id, name) for s in specs for name in s.executables).write(path)
    echo(f"Opted in and allowlisted {', '.join(s.id for s in specs)} (allowlist: {path}).")
    standins = {spec.id: exe for spec in specs if (exe := standin_executable(spec)) is not None}
    if not standins:
        raise DemoError("no stand-in executables are installed: pip install -e plugins/ceip-analyst")
    for spec in specs:
        if spec.id not in standins:
            echo(f"{spec.id}: no stand-in executable is installed; the agent has nothing of it to observe.")

    log_path = folder / "agent.log"
    env = {**os.environ, "CEIP_HOME": str(folder)}
    command = [sys.executable, "-m", "ceip_core", "agent", "--interval", str(POLL_S)]
    with open(log_path, "ab") as log_file:
        agent = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file)
    try:
        _wait(lambda: read_status(folder).state == "running" or agent.poll() is not None, 30)
        if agent.poll() is not None or read_status(folder).state != "running":
            raise DemoError(f"the agent did not start; see {log_path}:\n{_tail(log_path)}")
        echo(f"Started the agent (pid {agent.pid}, looking every {POLL_S} s; its log: {log_path}).")
        before = read_status(folder).sessions_ended
        runs: list[tuple[str, str, list[str]]] = [(product, exe, []) for product, exe in standins.items()]
        first_product, first_exe = next(iter(standins.items()))
        runs.append((first_product, first_exe, ["--crash"]))
        launched = [
            subprocess.Popen(
                [exe, "--seconds", str(seconds), *extra],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # the crashing one prints its traceback
            )
            for _, exe, extra in runs
        ]
        names = ", ".join(f"{Path(exe).name}{' ' + ' '.join(extra) if extra else ''}" for _, exe, extra in runs)
        echo(f"Launched the stand-ins for {seconds:g} s: {names}. Waiting for the agent to see them end ...")
        seen = _wait(lambda: read_status(folder).sessions_ended - before >= len(launched), seconds + 20)
        for proc in launched:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not seen:
            echo("The agent did not see every stand-in end (is this Linux?); what it saw is queued.")
    finally:
        _stop(agent)
    ended = read_status(folder)
    echo(f"Stopped the agent: it sealed {ended.reports_sealed} report(s).")


@frozen
class Service:
    """The demo's running ``ceip serve``."""

    url: str
    token: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def running_service(folder: Path, echo: Callable[[str], None]) -> Iterator[Service]:
    """``ceip serve`` on a free loopback port, its data in ``folder``.

    Stopped (SIGTERM, as an operator would) when the block ends, unless it has stopped already (Ctrl-C
    in a terminal reaches it too).
    """
    from ceip_core.service.auth import TOKEN_FILE, load_or_create_token

    token = load_or_create_token(folder)
    command = [sys.executable, "-m", "ceip_core", "serve", "--host", "127.0.0.1", "--port", "0", "--data", str(folder)]
    log_path = folder / "service.log"
    with open(log_path, "ab") as log_file:
        service = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_file, text=True
        )
    try:
        url = _announced_url(service, 30)
        if url is None:
            raise DemoError(f"ceip serve did not start; see {log_path}:\n{_tail(log_path)}")
        echo(f"Started the receiving service: {' '.join(['ceip', *command[3:]])} (pid {service.pid}, token in "
             f"{folder / TOKEN_FILE}, log {log_path}).")  # fmt: skip
        yield Service(url, token, service)
    finally:
        _stop(service)
        if service.stdout is not None:
            service.stdout.close()


def _announced_url(service: subprocess.Popen[str], timeout: float) -> str | None:
    """The base URL ``ceip serve`` announces on its first line (``... worker(s) on http://...``)."""
    assert service.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service.poll() is None:
        ready, _, _ = select.select([service.stdout], [], [], max(0.0, deadline - time.monotonic()))
        line = service.stdout.readline() if ready else ""
        if " on http" in line:
            return line.split(" on ", 1)[1].split(",", 1)[0].strip()
    return None


async def _send(plugins: Plugins, url: str, items: list[BatchItem]) -> int:
    """Send ``items`` through the HTTP transport, in batches within the size limits; how many were accepted."""
    transport = plugins.transport_for(url)
    accepted = start = 0
    try:
        for group in wire.split_batches([item.data for item in items]):
            batch = Batch(items[start : start + len(group)])
            start += len(group)
            accepted += sum(r.outcome is Outcome.ACCEPTED for r in await transport.send(batch))
    finally:
        await transport.close()
    return accepted


def _fleet_items(plugins: Plugins) -> tuple[list[BatchItem], list[BatchItem]]:
    """The simulated fleet as batch items: its reports, and the deletion requests of those who opted out."""
    simulated = fleet.Fleet(list(plugins.products.values()), machines_count=FLEET_MACHINES, days=FLEET_DAYS)
    reports = [BatchItem(r.report_id, "report", r.product, wire.encode_item(r)) for r in simulated.reports()]
    deletions = [BatchItem(d.request_id, "deletion", d.product, wire.encode_item(d)) for d in simulated.deletions()]
    return reports, deletions


def queued(folder: Path) -> str:
    """What this machine has queued, in one line: ``4 report(s): analyst 2, hub-server 1, packager 1``."""
    items = Spool(StateDB(folder)).items()
    by_product: dict[str, int] = {}
    for item in items:
        by_product[item.product] = by_product.get(item.product, 0) + 1
    found = ", ".join(f"{product} {n}" for product, n in sorted(by_product.items()))
    return f"{len(items)} item(s): {found}" if items else "nothing"


async def _ask(url: str, token: str, query: str) -> dict[str, Any]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/query/{query}", headers={"Authorization": f"Bearer {token}"}) as response,
    ):
        response.raise_for_status()
        answer: dict[str, Any] = await response.json()
        return answer


def populate(plugins: Plugins, folder: Path, url: str, token: str, echo: Callable[[str], None]) -> None:
    """Fill the service: the simulated fleet, its opt-outs, then a copy of this machine's queued reports."""
    began = time.monotonic()
    reports, deletions = _fleet_items(plugins)
    accepted = asyncio.run(_send(plugins, url, reports))
    echo(f"Sent {len(reports):,} reports of {FLEET_MACHINES} simulated machines over the last {FLEET_DAYS} days "
         f"to {url}/v1/reports: {accepted:,} accepted ({time.monotonic() - began:.1f} s).")  # fmt: skip
    if accepted != len(reports):
        log = folder / SERVICE_FOLDER / "service.log"
        raise DemoError(f"the service accepted {accepted} of {len(reports)} simulated reports; see {log}")
    opted_out = asyncio.run(_send(plugins, url, deletions))
    echo(f"Sent {opted_out} deletion request(s) of the simulated machines that opted out (the opt-outs chart).")
    own = [BatchItem(q.item_id, q.kind, q.product, q.data) for q in Spool(StateDB(folder)).items()]
    echo(f"Sent a copy of this machine's {len(own)} queued item(s): {asyncio.run(_send(plugins, url, own))} "
         "accepted; they stay queued here for the tour.")  # fmt: skip
    # The first query folds what the service has not folded yet, so the first page view is quick.
    answer = asyncio.run(_ask(url, token, "versions"))
    machines = ", ".join(f"{r['product']} {r['machines']}" for r in answer["versions"] if r["version"] is None)
    echo(f"Active machines per product: {machines}. What fewer than k = {answer['k']} machines reported (a problem "
         "only this machine had) is hidden; each page says what it hid under 'Hidden numbers'.")  # fmt: skip


def _wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[Any]) -> None:
    """Ask a child to stop (SIGTERM: the agent seals what it holds, the service finishes its commits);
    kill it if it has not stopped within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
