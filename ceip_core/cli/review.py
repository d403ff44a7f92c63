"""``ceip review``: what is queued to be sent, decoded by the one decoder of the wire
(:mod:`ceip_core.wire`), which only this command among the machine's loads.

It streams: the spool is read a batch at a time (:meth:`ceip_core.spool.Spool.stream`) and each item is
printed as soon as it is decoded, so the first line comes at once and memory stays flat however much is
queued. ``--json`` prints JSON lines: one item per line, oldest first, exactly the bytes the spool holds
and the transport sends. Every value in the readable view came from a product or a plugin, so control
characters in it are shown escaped (:func:`ceip_core.printable.shown`).
"""

from __future__ import annotations

import sys

import click

from ceip_core import wire
from ceip_core.cli.common import check_product, open_spool, when
from ceip_core.printable import shown
from ceip_core.records import DeletionRequest, Report, UnknownItem
from ceip_core.spool import Spool, SpooledItem


def _decoded(queued: SpooledItem) -> Report | DeletionRequest | UnknownItem:
    return _decoded_bytes(queued.item_id, queued.data)


def _decoded_bytes(item_id: str, data: bytes) -> Report | DeletionRequest | UnknownItem:
    try:
        return wire.decode_item(data)
    except wire.WireError as exc:
        return UnknownItem(type=f"undecodable ({exc.reason})", item_id=item_id)


def _label(label: str | None) -> str:
    return f" [{shown(label)}]" if label else ""


def _describe_item(item: Report | DeletionRequest | UnknownItem) -> list[str]:
    if isinstance(item, DeletionRequest):
        return [
            f"deletion request {shown(item.request_id)}: delete everything held for this machine and "
            f"{shown(item.product)}"
        ]
    if isinstance(item, UnknownItem):
        return [f"item of unknown type {item.type!r}"]
    lines = [
        f"report {shown(item.report_id)}  {shown(item.product)} {shown(item.product_version)}  "
        f"{item.period.start:%Y-%m-%d %H:%M} .. {item.period.end:%Y-%m-%d %H:%M} UTC  machine {shown(item.guid)}"
    ]
    for c in item.counters:
        lines.append(f"  count     {shown(c.name)}{_label(c.label)} = {c.value}")
    for h in item.histograms:
        mean = h.sum / h.count if h.count else 0.0
        spread = f"min {h.min:.3g}, mean {mean:.3g}, max {h.max:.3g}"
        lines.append(f"  histogram {shown(h.name)}{_label(h.label)}: {h.count} values, {spread}")
    for p in item.problems:
        lines.append(f"  problem   {shown(p.kind)}: {shown(p.signature)} x{p.count}")
    for k, v in item.config.items():
        lines.append(f"  config    {shown(k)} = {v!r}")
    for s in item.sessions:
        lines.append(f"  session   {shown(s.executable)} {s.duration_s:.1f}s ended {s.ended.value}")
    if item.system is not None:
        si = item.system
        described = f"{si.os} {si.os_version} {si.arch}, {si.cpu_logical} CPUs, {si.memory_bucket}"
        lines.append(f"  system    {shown(described)}")
    for k, n in item.diagnostics.items():
        lines.append(f"  diagnostic {shown(k)} = {n}")
    return lines


@click.command("review")
@click.option("--product", help="Only this product.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON lines: one queued item per line, oldest first, exactly as stored and sent.",
)
@click.option("--sent", is_flag=True, help="What was sent in the last 30 days instead, as the receiver got it.")
def review(product: str | None, as_json: bool, sent: bool) -> None:
    """Show exactly what is queued to be sent (with --sent: what was sent)."""
    spool = open_spool()
    check_product(product, spool)
    if sent:
        _review_sent(spool, product, as_json)
        return
    if as_json:
        out = sys.stdout.buffer
        for queued in spool.stream(product):
            out.write(queued.data + b"\n")
        out.flush()
        return
    # Grouped by product, each product's items oldest first: one pass over the queue per product.
    shown_any = False
    for prod in sorted(spool.products()) if product is None else [product]:
        for n, queued in enumerate(spool.stream(prod)):
            if n == 0:
                click.echo(f"== {shown(prod)} ==")
            click.echo("\n".join(_describe_item(_decoded(queued))))
            shown_any = True
    if not shown_any:
        click.echo("Nothing is queued." + (f" (for {shown(product)})" if product else ""))


def _review_sent(spool: Spool, product: str | None, as_json: bool) -> None:
    """``review --sent``: the sent history (``ceip_core.sent_history``), oldest first; with ``--json`` a JSON
    line per item: ``{"sent": <UTC time>, "destination": ..., "item": <the item exactly as sent>}``."""
    import json
    import time

    from ceip_core.sent_history import read_sent

    out = sys.stdout.buffer
    shown_any = False
    for item in spool.db.read(lambda conn: list(read_sent(conn, time.time(), product))):
        shown_any = True
        if as_json:  # the item's own bytes, as sent: not parsed again to be printed
            head = f'{{"destination": {json.dumps(item.destination)}, "item": '.encode()
            out.write(head + item.data + f', "sent": {json.dumps(when(item.sent))}}}\n'.encode())
            continue
        click.echo(f"== {shown(item.product)}: sent {when(item.sent)} to {shown(item.destination)} ==")
        click.echo("\n".join(_describe_item(_decoded_bytes(item.item_id, item.data))))
    out.flush()
    if not shown_any and not as_json:
        click.echo("Nothing was sent in the last 30 days." + (f" (for {shown(product)})" if product else ""))
