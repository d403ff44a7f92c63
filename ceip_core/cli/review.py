"""``ceip review``: what is queued to be sent, for the person at the machine, decoded by the one decoder
of the wire (:mod:`ceip_core.wire`), which only this command among the machine's loads."""

from __future__ import annotations

import json

import click

from ceip_core import wire
from ceip_core.cli.common import check_product, emit, open_spool
from ceip_core.records import DeletionRequest, Report, UnknownItem


def _describe_item(item: Report | DeletionRequest | UnknownItem) -> list[str]:
    if isinstance(item, DeletionRequest):
        return [f"deletion request {item.request_id}: delete everything held for this machine and {item.product}"]
    if isinstance(item, UnknownItem):
        return [f"item of unknown type {item.type!r}"]
    lines = [
        f"report {item.report_id}  {item.product} {item.product_version}  "
        f"{item.period.start:%Y-%m-%d %H:%M} .. {item.period.end:%Y-%m-%d %H:%M} UTC  machine {item.guid}"
    ]
    for c in item.counters:
        lines.append(f"  count     {c.name}{f' [{c.label}]' if c.label else ''} = {c.value}")
    for h in item.histograms:
        label = f" [{h.label}]" if h.label else ""
        mean = h.sum / h.count if h.count else 0.0
        spread = f"min {h.min:.3g}, mean {mean:.3g}, max {h.max:.3g}"
        lines.append(f"  histogram {h.name}{label}: {h.count} values, {spread}")
    for p in item.problems:
        lines.append(f"  problem   {p.kind}: {p.signature} x{p.count}")
    for k, v in item.config.items():
        lines.append(f"  config    {k} = {v!r}")
    for s in item.sessions:
        lines.append(f"  session   {s.executable} {s.duration_s:.1f}s ended {s.ended.value}")
    if item.system is not None:
        si = item.system
        lines.append(f"  system    {si.os} {si.os_version} {si.arch}, {si.cpu_logical} CPUs, {si.memory_bucket}")
    for k, v in item.diagnostics.items():
        lines.append(f"  diagnostic {k} = {v}")
    return lines


@click.command("review")
@click.option("--product", help="Only this product.")
@click.option("--json", "as_json", is_flag=True, help="Exactly the JSON the receiving service will get.")
def review(product: str | None, as_json: bool) -> None:
    """Show exactly what is queued to be sent."""
    spool = open_spool()
    check_product(product, spool)
    items = spool.items(product)
    decoded = []
    for queued in items:
        try:
            decoded.append(wire.decode_item(queued.data))
        except wire.WireError as exc:
            decoded.append(UnknownItem(type=f"undecodable ({exc.reason})", item_id=queued.item_id))
    if as_json:
        emit([json.loads(q.data) for q in items])
        return
    if not items:
        click.echo("Nothing is queued." + (f" (for {product})" if product else ""))
        return
    by_product: dict[str, list[str]] = {}
    for queued, item in zip(items, decoded, strict=True):
        by_product.setdefault(queued.product, []).extend(_describe_item(item))
    for prod, lines in sorted(by_product.items()):
        click.echo(f"== {prod} ==")
        for line in lines:
            click.echo(line)
