"""The data dictionary: what each product may collect, generated from the registered specs and from the
records the agent adds to every report.

Published as docs/data-dictionary.md (``ceip describe > docs/data-dictionary.md``); a test fails when
the published copy drifts from the code. The machine configuration (``SystemInfo``) and the process
sessions (``ProcessSession``) are listed field by field from the records themselves, with their buckets,
hardware features and end kinds taken from the code that produces them, so a new field cannot be sent
without being described: :func:`markdown` refuses a field that has no description here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from ceip_core.default_plugins.declared import FEATURE_VALUES, HARDWARE_FEATURES
from ceip_core.default_plugins.system_collector import BOOT_AGE_BUCKETS, BOOT_AGE_TOP, MEMORY_BUCKETS, MEMORY_TOP
from ceip_core.records import (
    SESSIONS_CATEGORY,
    SYSTEM_CATEGORY,
    Category,
    EndKind,
    ProcessSession,
    ProductSpec,
    SystemInfo,
)

_MACHINE = """\
## Every report

Each report carries a random machine ID (created when you first opt in, discarded when you opt out of
everything), the product's id and version, and the period it covers. It never carries your name,
address, e-mail, account, host name, user name, IP or MAC address, or any serial number: free text
(labels, problem signatures, configuration strings, the system strings below) is scrubbed of them
before it is written to disk (see docs/scrubbing.md).
"""


def _code(values: Iterable[str]) -> str:
    return ", ".join(f"`{v}`" for v in values)


#: What each field of the machine configuration is. Every field of ``SystemInfo`` must have an entry.
SYSTEM_FIELDS: Mapping[str, tuple[str, str]] = {
    "cpu_logical": ("count", "Number of logical processors."),
    "cpu_physical": ("count", "Number of physical processor cores."),
    "memory_bucket": (
        "bucket",
        f"Installed memory, never the exact amount: one of {_code([n for _, n in MEMORY_BUCKETS] + [MEMORY_TOP])}.",
    ),
    "os": ("text", "Operating system family, e.g. `Linux`, `Windows`, `Darwin`."),
    "os_version": (
        "version",
        "Operating system release: the kernel release on Linux, the build on Windows, the macOS version.",
    ),
    "arch": ("text", "Processor architecture, e.g. `x86_64`, `arm64`."),
    "net_interfaces_up": ("count", "Number of network interfaces that are up, loopback excluded (no names)."),
    "net_connected": ("yes/no", "Whether one of them has a routable address (the address is never sent)."),
    "boot_age_bucket": (
        "bucket",
        f"Time since the machine started: one of {_code([n for _, n in BOOT_AGE_BUCKETS] + [BOOT_AGE_TOP])}.",
    ),
    "features": (
        "map",
        f"Hardware features {_code(HARDWARE_FEATURES)}, each {_code(FEATURE_VALUES)}.",
    ),
}

#: What each field of a process session is. Every field of ``ProcessSession`` must have an entry.
SESSION_FIELDS: Mapping[str, tuple[str, str]] = {
    "executable": ("text", "The observed executable's file name, one its product declares."),
    "started": ("time", "When the process started (UTC)."),
    "duration_s": ("seconds", "How long it ran, to within the agent's polling interval."),
    "cpu_s": ("seconds", "Processor time it used."),
    "peak_rss_bytes": ("bytes", "The most resident memory it used."),
    "ended": ("kind", f"How it ended: one of {_code(e.value for e in EndKind)}."),
}


def _fields(record: type, described: Mapping[str, tuple[str, str]]) -> list[str]:
    """The table of ``record``'s fields; raises ``KeyError`` naming a field without a description."""
    rows = ["| field | type | description |", "| --- | --- | --- |"]
    for f in attrs.fields(record):
        if f.name not in described:
            raise KeyError(f"{record.__name__}.{f.name} has no description in ceip_core.dictionary")
        kind, text = described[f.name]
        rows.append(f"| `{f.name}` | {kind} | {_cell(text)} |")
    return rows


def _agent_sections() -> list[str]:
    return [
        "## Machine configuration",
        "",
        "When the ceip agent runs, reports also carry coarse machine configuration (`system`), collected",
        "once an hour. A value the operating system does not tell is left out, never guessed. Category:",
        f"{SYSTEM_CATEGORY.value} (`ceip consent in <product> --only ...` can leave it out).",
        "",
        *_fields(SystemInfo, SYSTEM_FIELDS),
        "",
        "## Process sessions",
        "",
        "The agent also reports each run of a product's observed executables (`sessions`), seen from outside",
        "the process: it reads nothing of any other program, and of these only the fields below (no command",
        "line, environment, user or open files). Category: all of it is",
        f"{SESSIONS_CATEGORY.value}, crashes included.",
        "",
        *_fields(ProcessSession, SESSION_FIELDS),
        "",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(specs: Iterable[ProductSpec]) -> str:
    """The dictionary for ``specs`` as Markdown, grouped by product and category."""
    out = ["# Data dictionary", "", "Generated by `ceip describe` from the installed product plugins.", "", _MACHINE]
    out += _agent_sections()
    for spec in sorted(specs, key=lambda s: s.id):
        out += product_section(spec)
    return "\n".join(out).rstrip("\n") + "\n"


def product_section(spec: ProductSpec) -> list[str]:
    """One product's part of the dictionary (Markdown lines): what ``ceip allowlist add`` shows a
    maintainer before the product may report."""
    out = [f"## {spec.display_name} (`{spec.id}`)", ""]
    if spec.description:
        out += [spec.description, ""]
    out += [f"Observed executables: {', '.join(f'`{e}`' for e in spec.executables) or 'none'}.", ""]
    for category in Category:
        metrics = sorted((m for m in spec.metrics if m.category is category), key=lambda m: m.name)
        if not metrics:
            continue
        out += [
            f"### {category.value.capitalize()}",
            "",
            "| metric | kind | unit | description |",
            "| --- | --- | --- | --- |",
        ]
        for m in metrics:
            labels = f" Labels: {', '.join(m.labels)}." if m.labels else ""
            out.append(f"| `{m.name}` | {m.kind.value} | {_cell(m.unit)} | {_cell(m.description)}{_cell(labels)} |")
        out.append("")
    return out
