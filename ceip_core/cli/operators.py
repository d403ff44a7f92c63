"""The ``ceip`` commands of the operators: the agent that observes the products (``agent``, with
``agent install`` and ``uninstall`` from :mod:`ceip_core.autostart`) and the demonstration (``demo``).
The vendor's commands (``serve``, ``report``, ``import``, ``rebuild-rollups``) are in
:mod:`ceip_core.service.commands`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

import click

from ceip_core.autostart import with_autostart
from ceip_core.cli.common import load_plugins, setting, transport_for
from ceip_core.statedb import state_dir


@click.command("demo")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.5, max=60),
    default=2.0,
    show_default=True,
    help="How long each product runs.",
)
@click.option("--no-wait", is_flag=True, help="Stop the service and exit once the dashboard is ready (for scripts).")
def demo(seconds: float, no_wait: bool) -> None:
    """The real thing on this machine: the agent observes the stand-in products, then review, status and
    the vendor's dashboard.

    Opts the installed products in and allowlists them, starts `ceip agent`, launches each product's
    stand-in executable (and one that crashes), waits until the agent has seen them end, stops it, and
    says what was queued (`ceip review` shows it). Then starts `ceip serve` on 127.0.0.1, sends it a
    simulated fleet of 200 machines and a copy of this machine's reports over HTTP (they stay queued), and
    prints the dashboard's address and login token; it serves until Ctrl-C.
    Use it with a throw-away state folder: ceip --home ./demo-home demo
    """
    from ceip_core.service import demo as demo_run

    if "CEIP_HOME" not in os.environ:
        raise click.UsageError("give a throw-away state folder, e.g. 'ceip --home ./demo-home demo'")
    plugins = load_plugins()
    if not plugins.products:
        raise click.ClickException("no product plugins are installed: pip install -e plugins/ceip-analyst")
    try:
        demo_run.run(plugins, state_dir(), seconds, click.echo)
    except demo_run.DemoError as exc:
        raise click.ClickException(str(exc)) from None
    home = f"ceip --home {state_dir()}"
    click.echo(f"Queued on this machine: {demo_run.queued(state_dir())}. See them: {home} review (the machine: "
               f"{home} status).\n")  # fmt: skip
    service_dir = state_dir() / demo_run.SERVICE_FOLDER
    try:
        with demo_run.running_service(service_dir, click.echo) as service:
            demo_run.populate(plugins, state_dir(), service.url, service.token, click.echo)
            click.echo(f"\nDashboard: {service.url}/dashboard")
            click.echo(f"Log in with the query token: {service.token}")
            click.echo(f"To serve it again later: ceip serve --data {service_dir}")
            if no_wait:
                return
            click.echo("Serving until Ctrl-C.")
            with contextlib.suppress(KeyboardInterrupt):
                service.process.wait()
            click.echo("Stopped the service.")
    except demo_run.DemoError as exc:
        raise click.ClickException(str(exc)) from None


NO_UPLOAD = "none"


@click.command("agent")
@click.option("--once", is_flag=True, help="Run one full cycle (collect, seal, upload) and exit: for cron and tests.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Seconds between two looks at the running processes.",
)
@click.option(
    "--seal-every",
    type=click.FloatRange(min=0.1),
    default=86400.0,
    show_default=True,
    help="Seconds between two periodic reports per product (machine configuration, running sessions).",
)
@click.option(
    "--upload-to",
    "url",
    help="Send what is queued to this URL after each report (default: the upload-url setting; 'none': keep it).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages too.")
def agent(once: bool, interval: float, seal_every: float, url: str | None, verbose: bool) -> None:
    """Observe the allowlisted, opted-in products and this machine, and queue reports (one agent per machine).

    Runs until SIGTERM or Ctrl-C, then seals what it holds. Logs to stderr.
    """
    from ceip_core.agent import AgentConfig, AgentError, run_agent
    from ceip_core.default_plugins.process_observer import ProcessObserver

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    plugins = load_plugins()
    url = None if url == NO_UPLOAD else url or setting("upload-url")
    if url is not None:
        asyncio.run(transport_for(url).close())  # a bad URL is refused now, not after the first report
    config = AgentConfig(state_dir(), {ProcessObserver.name: interval}, seal_every, url, once)
    try:
        run_agent(config, plugins)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from None


#: ``ceip agent``, with ``agent install`` and ``agent uninstall``: its start with the machine.
agent_group = with_autostart(agent)
