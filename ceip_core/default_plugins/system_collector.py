"""The system collector (built-in): coarse machine configuration, attached to every product's reports.

Only coarse facts that many machines share: CPU counts, memory and uptime in buckets, OS, its release and
the architecture, how many network interfaces are up and whether one is connected, and two hardware
features. Never a host name, serial number, MAC or IP address: addresses are looked at, on the machine,
only to tell whether an interface is connected. What the OS does not tell is ``None`` (or ``unknown``
for a feature), never a guess.
"""

from __future__ import annotations

import ipaddress
import math
import platform
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from ceip_core.collectors import CollectContext, Collector, Observation
from ceip_core.hookspecs import hookimpl
from ceip_core.records import SystemInfo

GIB = 1 << 30
#: Upper bounds (whole GiB, exclusive) of the memory buckets, and the bucket names.
MEMORY_BUCKETS = ((2, "<2 GiB"), (4, "2-4 GiB"), (8, "4-8 GiB"), (16, "8-16 GiB"), (32, "16-32 GiB"), (64, "32-64 GiB"))
MEMORY_TOP = ">=64 GiB"
#: Upper bounds (seconds, exclusive) of the time-since-boot buckets, and the bucket names.
BOOT_AGE_BUCKETS = ((3600, "<1 h"), (86400, "1-24 h"), (7 * 86400, "1-7 d"), (30 * 86400, "7-30 d"))
BOOT_AGE_TOP = ">=30 d"
#: USB 2.0 high speed, in Mbit/s as Linux writes it in /sys/bus/usb/devices/*/speed.
USB_HIGH_SPEED = 480


def memory_bucket(total_bytes: int) -> str:
    """The bucket of installed memory. The total is rounded up to whole GiB first: the OS keeps a little
    for itself, and a 16 GiB machine that reports 15.6 GiB belongs with the 16 GiB machines."""
    gib = math.ceil(total_bytes / GIB)
    return next((name for bound, name in MEMORY_BUCKETS if gib < bound), MEMORY_TOP)


def boot_age_bucket(seconds: float) -> str:
    return next((name for bound, name in BOOT_AGE_BUCKETS if seconds < bound), BOOT_AGE_TOP)


def os_version() -> str | None:
    """The OS release: the kernel release on Linux, the build on Windows, the macOS version. Never
    ``platform.version()`` on Linux and macOS, whose kernel build string can name the build host."""
    if sys.platform == "win32":
        return platform.version() or None
    if sys.platform == "darwin":
        return platform.mac_ver()[0] or None
    return platform.release() or None


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


def hardware_features(sys_root: Path = Path("/sys")) -> dict[str, str]:
    """Bluetooth and high-speed USB, as Linux's sysfs tells: ``present``, ``absent`` (the kernel knows
    of none) or ``unknown`` (no sysfs to ask, as on other systems, or a value that cannot be read)."""
    if not (sys_root / "class").is_dir() or not (sys_root / "bus").is_dir():
        return {"bluetooth": "unknown", "usb_high_speed": "unknown"}
    bluetooth = sys_root / "class" / "bluetooth"
    has_bluetooth = bluetooth.is_dir() and any(bluetooth.iterdir())
    return {"bluetooth": "present" if has_bluetooth else "absent", "usb_high_speed": _usb(sys_root)}


def _usb(sys_root: Path) -> str:
    devices = sys_root / "bus" / "usb" / "devices"
    if not devices.is_dir():
        return "absent"
    speeds = []
    for speed in devices.glob("*/speed"):
        try:
            speeds.append(float(speed.read_text().strip()))
        except (OSError, ValueError):
            return "unknown"
    return "present" if any(s >= USB_HIGH_SPEED for s in speeds) else "absent"


def system_info(sys_root: Path = Path("/sys")) -> SystemInfo:
    """This machine's configuration, now."""
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
        os_version=os_version(),
        arch=platform.machine() or None,
        net_interfaces_up=interfaces,
        net_connected=connected,
        boot_age_bucket=boot_age,
        features=hardware_features(sys_root),
    )


class SystemCollector:
    """Collects :func:`system_info` once an hour; the agent attaches the latest to every report."""

    name = "system"
    interval_s = 3600.0

    async def collect(self, ctx: CollectContext) -> Sequence[Observation]:
        return [system_info()]


@hookimpl
def ceip_register_collectors(register: Callable[[Collector], None]) -> None:
    register(SystemCollector())
