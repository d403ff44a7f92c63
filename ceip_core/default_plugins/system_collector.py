"""The system collector (built-in): coarse machine configuration, attached to every product's reports.

Only coarse facts that many machines share: CPU counts, memory and uptime in buckets, OS, its release and
the architecture, how many network interfaces are up and whether one is connected, and two hardware
features and the OS release, which each platform tells its own way (:mod:`.machine_facts`). Never a host
name, serial number, MAC or IP address: addresses are looked at, on the machine, only to tell whether an
interface is connected. What the OS does not tell is ``None`` (or ``unknown`` for a feature), never a guess.
"""

from __future__ import annotations

import ipaddress
import math
import platform
import socket
import time
from collections.abc import Callable, Sequence

import psutil

from ceip_core.collectors import CollectContext, Collector, Observation
from ceip_core.default_plugins.machine_facts import MachineFacts, machine_facts
from ceip_core.hookspecs import hookimpl
from ceip_core.records import SystemInfo

GIB = 1 << 30
#: Upper bounds (whole GiB, exclusive) of the memory buckets, and the bucket names.
MEMORY_BUCKETS = ((2, "<2 GiB"), (4, "2-4 GiB"), (8, "4-8 GiB"), (16, "8-16 GiB"), (32, "16-32 GiB"), (64, "32-64 GiB"))
MEMORY_TOP = ">=64 GiB"
#: Upper bounds (seconds, exclusive) of the time-since-boot buckets, and the bucket names.
BOOT_AGE_BUCKETS = ((3600, "<1 h"), (86400, "1-24 h"), (7 * 86400, "1-7 d"), (30 * 86400, "7-30 d"))
BOOT_AGE_TOP = ">=30 d"


def memory_bucket(total_bytes: int) -> str:
    """The bucket of installed memory. The total is rounded up to whole GiB first: the OS keeps a little
    for itself, and a 16 GiB machine that reports 15.6 GiB belongs with the 16 GiB machines."""
    gib = math.ceil(total_bytes / GIB)
    return next((name for bound, name in MEMORY_BUCKETS if gib < bound), MEMORY_TOP)


def boot_age_bucket(seconds: float) -> str:
    return next((name for bound, name in BOOT_AGE_BUCKETS if seconds < bound), BOOT_AGE_TOP)


def network() -> tuple[int | None, bool | None]:
    """How many non-loopback interfaces are up, and whether one of them has a routable address."""
    try:
        stats = psutil.net_if_stats()
        addrs = psutil.net_if_addrs()
    except (OSError, psutil.Error):
        return None, None
    up = 0
    connected = False
    for name, stat in stats.items():
        inet = [a.address for a in addrs.get(name, ()) if a.family in (socket.AF_INET, socket.AF_INET6)]
        ips = [ip for address in inet if (ip := _ip(address)) is not None]
        if not stat.isup or "loopback" in stat.flags.split(",") or (ips and all(ip.is_loopback for ip in ips)):
            continue
        up += 1
        connected = connected or any(not (ip.is_link_local or ip.is_loopback) for ip in ips)
    return up, connected


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone such as %eth0
    except ValueError:
        return None


def system_info(facts: MachineFacts | None = None) -> SystemInfo:
    """This machine's configuration, now (``facts``: its platform's, asked now if not given)."""
    facts = machine_facts() if facts is None else facts
    interfaces, connected = network()
    try:
        boot_age: str | None = boot_age_bucket(time.time() - psutil.boot_time())
    except (OSError, psutil.Error):
        boot_age = None
    return SystemInfo(
        cpu_logical=psutil.cpu_count(logical=True),
        cpu_physical=psutil.cpu_count(logical=False),
        memory_bucket=memory_bucket(psutil.virtual_memory().total),
        os=platform.system() or None,
        os_version=facts.os_version,
        arch=platform.machine() or None,
        net_interfaces_up=interfaces,
        net_connected=connected,
        boot_age_bucket=boot_age,
        features=facts.features(),
    )


class SystemCollector:
    """Collects :func:`system_info` once an hour; the agent attaches the latest to every report."""

    name = "system"
    interval_s = 3600.0
    machine_facts = True

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        import asyncio  # here, not at the top: sealing in a product's process loads this module

        return [await asyncio.to_thread(system_info)]  # macOS's system_profiler takes seconds


@hookimpl
def ceip_register_collectors(register: Callable[[Collector], None]) -> None:
    register(SystemCollector())
