"""Hardware and configuration facts, per platform: the OS's release and two hardware features.

One small interface, :class:`FactsSource`: a thin *fetch* that asks the platform for raw data (the only
platform-specific call), and a pure *parse* that turns it into :class:`MachineFacts`. The parsers run on
every platform, so the tests check each of them, on Linux, against recorded outputs of the platform's
tools; the fetches are checked there in form (see ``docs/agent.md``).

Each parser takes only the fields it names and ignores the rest: the raw data can hold a user's name,
the host name, serial numbers and device addresses (``system_profiler`` does), which never leave the
parser. What the platform does not tell, or tells in a shape the parser does not know, is ``unknown``
(``None`` for the release), never a guess, and never an exception.

- Linux: sysfs (``/sys/class/bluetooth``, ``/sys/bus/usb/devices/*/speed``) and the kernel release.
- macOS: ``system_profiler -json`` of three data types (a subprocess, once an hour).
- Windows: the registry, through the standard library's ``winreg``: no dependency (WMI would need
  pywin32 and COM), no process started, and the PnP manager's own record of the devices it started
  (``Services\\<driver>\\Enum\\Count``), which holds counts, not device names.
"""

from __future__ import annotations

import json
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"
#: USB 2.0 high speed, in Mbit/s as Linux writes it in /sys/bus/usb/devices/*/speed.
USB_HIGH_SPEED = 480

_R = TypeVar("_R")


@dataclass(frozen=True)
class MachineFacts:
    """What the platform tells of the OS release and the hardware features."""

    os_version: str | None
    """The OS release: the kernel release on Linux, ``10.0.<build>.<revision>`` on Windows, the macOS
    version. Never a kernel build string, which can name the build host."""
    bluetooth: str = UNKNOWN
    """A Bluetooth controller: ``present``, ``absent`` or ``unknown``."""
    usb_high_speed: str = UNKNOWN
    """A USB 2.0 (480 Mbit/s) or faster controller or device."""

    def features(self) -> dict[str, str]:
        return {"bluetooth": self.bluetooth, "usb_high_speed": self.usb_high_speed}


@dataclass(frozen=True)
class FactsSource(Generic[_R]):
    """One platform's facts: ``parse(fetch())``. ``fetch`` returns ``None`` when the platform cannot be
    asked; ``parse`` is pure and accepts anything ``fetch`` may return."""

    fetch: Callable[[], _R | None]
    parse: Callable[[_R | None], MachineFacts]

    def facts(self) -> MachineFacts:
        return self.parse(self.fetch())


# -- Linux: sysfs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sysfs:
    """What the Linux fetch reads: names of entries and the text of ``speed`` files, nothing more."""

    release: str
    bluetooth: tuple[str, ...] | None
    """Adapters under ``/sys/class/bluetooth``; ``None``: no sysfs to ask."""
    usb_speeds: tuple[str | None, ...] | None
    """Each USB device's or port's ``speed`` (``None``: unreadable); ``None``: no USB bus at all."""


def fetch_sysfs(sys_root: Path = Path("/sys")) -> Sysfs:
    release = platform.release()
    if not (sys_root / "class").is_dir() or not (sys_root / "bus").is_dir():
        return Sysfs(release, None, None)
    bluetooth = sys_root / "class" / "bluetooth"
    adapters = tuple(sorted(p.name for p in bluetooth.iterdir())) if bluetooth.is_dir() else ()
    devices = sys_root / "bus" / "usb" / "devices"
    speeds = tuple(_read(path) for path in sorted(devices.glob("*/speed"))) if devices.is_dir() else None
    return Sysfs(release, adapters, speeds)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def parse_sysfs(raw: Sysfs | None) -> MachineFacts:
    if raw is None:
        return MachineFacts(None)
    if raw.bluetooth is None:  # no sysfs: the release is known, the hardware is not
        return MachineFacts(raw.release or None)
    bluetooth = PRESENT if raw.bluetooth else ABSENT
    return MachineFacts(raw.release or None, bluetooth, _usb_from_speeds(raw.usb_speeds))


def _usb_from_speeds(speeds: tuple[str | None, ...] | None) -> str:
    if speeds is None:
        return ABSENT
    known = [n for text in speeds if (n := _number(text)) is not None]
    if any(n >= USB_HIGH_SPEED for n in known):
        return PRESENT
    return ABSENT if len(known) == len(speeds) else UNKNOWN  # one unreadable: not guessed


def _number(text: str | None) -> float | None:
    try:
        return float(text.strip()) if text is not None else None
    except ValueError:
        return None


# -- macOS: system_profiler -json ---------------------------------------------------------------------

#: The data types asked of ``system_profiler``: Bluetooth, USB, and the OS (for its version).
SYSTEM_PROFILER = ("system_profiler", "-json", "SPBluetoothDataType", "SPUSBDataType", "SPSoftwareDataType")
#: A USB bus's name, e.g. ``USB31Bus`` (USB 3.1) or ``USB20Bus``.
_USB_BUS = re.compile(r"USB\s*(\d)\.?(\d)?\s*Bus", re.IGNORECASE)
#: The first version in ``os_version`` (``macOS 14.4.1 (23E224)``).
_MACOS_VERSION = re.compile(r"\b(\d+\.\d+(?:\.\d+)?)\b")


def fetch_system_profiler(run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run) -> bytes | None:
    """The JSON that ``system_profiler`` prints (it takes a few seconds), or ``None`` if it fails."""
    try:
        done = run(list(SYSTEM_PROFILER), capture_output=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_system_profiler(raw: bytes | str | None) -> MachineFacts:
    """Reads ``SPSoftwareDataType[].os_version``, whether a Bluetooth entry has a controller, and the USB
    bus names and ``device_speed`` values; nothing else (not ``user_name``, ``local_host_name``, serial
    numbers, device names or addresses)."""
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return MachineFacts(None)
    return MachineFacts(_macos_version(data.get("SPSoftwareDataType")), _bluetooth(data), _usb(data))


def _entries(value: object) -> list[Mapping[str, Any]] | None:
    """A data type's list of entries (dicts only), or ``None`` if it is missing or not a list."""
    if not isinstance(value, list):
        return None
    return [entry for entry in value if isinstance(entry, dict)]


def _macos_version(value: object) -> str | None:
    for entry in _entries(value) or ():
        text = entry.get("os_version")
        if isinstance(text, str) and (found := _MACOS_VERSION.search(text)):
            return found.group(1)
    return None


def _bluetooth(data: Mapping[str, Any]) -> str:
    entries = _entries(data.get("SPBluetoothDataType"))
    if entries is None:
        return UNKNOWN
    # macOS 12 and later describe the controller in controller_properties; earlier ones in local_device_title.
    controller = any(
        isinstance(e.get(k), dict) for e in entries for k in ("controller_properties", "local_device_title")
    )
    return PRESENT if controller else ABSENT


def _usb(data: Mapping[str, Any]) -> str:
    buses = _entries(data.get("SPUSBDataType"))
    if buses is None:
        return UNKNOWN
    for bus in buses:
        name = bus.get("_name")
        if isinstance(name, str) and (found := _USB_BUS.search(name)) and int(found.group(1)) >= 2:
            return PRESENT
        if any(_is_high_speed(item.get("device_speed")) for item in _items(bus)):
            return PRESENT
    return ABSENT


def _items(entry: Mapping[str, Any], depth: int = 0) -> Iterator[Mapping[str, Any]]:
    """Every device under ``entry`` (hubs nest them), to a sane depth."""
    children = entry.get("_items")
    if depth > 16 or not isinstance(children, list):
        return
    for child in children:
        if isinstance(child, dict):
            yield child
            yield from _items(child, depth + 1)


def _is_high_speed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(("high_speed", "super_speed"))


# -- Windows: the registry ----------------------------------------------------------------------------

CURRENT_VERSION = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion"
#: The values read from CURRENT_VERSION, and only these (not RegisteredOwner, ProductId, InstallDate...).
VERSION_VALUES = (
    "CurrentMajorVersionNumber",
    "CurrentMinorVersionNumber",
    "CurrentBuildNumber",
    "UBR",
    "CurrentVersion",
)
#: Drivers whose started devices tell a feature: the Bluetooth port driver and the USB radio transport;
#: the EHCI (USB 2.0) and xHCI (USB 3.x) host controller drivers.
BLUETOOTH_DRIVERS = ("BTHPORT", "BTHUSB")
USB_HIGH_SPEED_DRIVERS = ("usbehci", "USBXHCI")
SERVICES = r"SYSTEM\CurrentControlSet\Services"


class Registry(Protocol):
    """The part of ``winreg`` the fetch uses (a stand-in serves the tests)."""

    HKEY_LOCAL_MACHINE: int

    def OpenKey(self, key: Any, sub_key: str, /) -> Any: ...

    def QueryValueEx(self, key: Any, name: str, /) -> tuple[Any, int]: ...


def fetch_registry(registry: Registry | None = None) -> dict[str, Any] | None:
    """``{"CurrentVersion": {value: data}, "DriverDevices": {driver: count}}``, where a count is how many
    devices the PnP manager started with that driver (0 if it is not installed). Reads the named values
    only and never enumerates a key, so nothing else in these keys is ever read."""
    if registry is None:
        if sys.platform != "win32":
            return None
        import winreg

        registry = winreg
    try:
        with registry.OpenKey(registry.HKEY_LOCAL_MACHINE, CURRENT_VERSION) as key:
            version = {name: data for name in VERSION_VALUES if (data := _value(registry, key, name)) is not None}
        drivers = {name: _started(registry, name) for name in (*BLUETOOTH_DRIVERS, *USB_HIGH_SPEED_DRIVERS)}
    except OSError:
        return None
    return {"CurrentVersion": version, "DriverDevices": drivers}


def _value(registry: Registry, key: Any, name: str) -> Any:
    try:
        return registry.QueryValueEx(key, name)[0]
    except FileNotFoundError:
        return None


def _started(registry: Registry, driver: str) -> int:
    try:
        with registry.OpenKey(registry.HKEY_LOCAL_MACHINE, rf"{SERVICES}\{driver}\Enum") as key:
            count = _value(registry, key, "Count")
    except FileNotFoundError:  # the driver is not installed, or has started no device
        return 0
    return count if isinstance(count, int) else 0


def parse_registry(raw: Mapping[str, Any] | None) -> MachineFacts:
    if not isinstance(raw, Mapping):
        return MachineFacts(None)
    version = raw.get("CurrentVersion")
    drivers = raw.get("DriverDevices")
    return MachineFacts(
        _windows_version(version) if isinstance(version, Mapping) else None,
        _started_any(drivers, BLUETOOTH_DRIVERS),
        _started_any(drivers, USB_HIGH_SPEED_DRIVERS),
    )


def _windows_version(values: Mapping[str, Any]) -> str | None:
    """``major.minor.build.revision`` (``10.0.22631.3447``); before Windows 10, ``6.1.7601``."""
    major, minor = values.get("CurrentMajorVersionNumber"), values.get("CurrentMinorVersionNumber")
    build, revision = values.get("CurrentBuildNumber"), values.get("UBR")
    if isinstance(major, int) and isinstance(minor, int):
        base = f"{major}.{minor}"
    elif isinstance(values.get("CurrentVersion"), str) and re.fullmatch(r"\d+\.\d+", values["CurrentVersion"]):
        base = values["CurrentVersion"]
    else:
        return None
    if not (isinstance(build, str) and build.isdigit()):
        return base
    return f"{base}.{build}.{revision}" if isinstance(revision, int) else f"{base}.{build}"


def _started_any(drivers: object, names: tuple[str, ...]) -> str:
    if not isinstance(drivers, Mapping) or not all(name in drivers for name in names):
        return UNKNOWN
    counts = [drivers[name] for name in names]
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        return UNKNOWN
    return PRESENT if any(c for c in counts) else ABSENT


# -- the platforms ------------------------------------------------------------------------------------


def _release() -> str:
    return platform.release()


def _release_only(raw: str | None) -> MachineFacts:
    return MachineFacts(raw or None)


SOURCES: dict[str, FactsSource[Any]] = {
    "linux": FactsSource(fetch_sysfs, parse_sysfs),
    "darwin": FactsSource(fetch_system_profiler, parse_system_profiler),
    "win32": FactsSource(fetch_registry, parse_registry),
}
"""Each platform's facts, by ``sys.platform`` (``linux`` for every Linux)."""
#: Other platforms: the release, and no hardware features.
OTHER: FactsSource[str] = FactsSource(_release, _release_only)


def machine_facts(platform_name: str = sys.platform) -> MachineFacts:
    """This machine's facts, asked the way its platform answers."""
    key = "linux" if platform_name.startswith("linux") else platform_name
    return SOURCES.get(key, OTHER).facts()
