"""Each platform's machine facts, parsed on Linux from recorded outputs of that platform's tools
(``tests/recorded/``), and each thin fetch run here against a stand-in of what it asks: a
``system_profiler`` program on the PATH, a registry read from a recorded dump. What could only be checked
in form (the real ``winreg`` module, a real Mac's ``system_profiler``) is named in docs/agent.md."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ceip_core.default_plugins import machine_facts as mf
from ceip_core.default_plugins.machine_facts import (
    ABSENT,
    PRESENT,
    UNKNOWN,
    MachineFacts,
    fetch_registry,
    fetch_sysfs,
    machine_facts,
    parse_registry,
    parse_sysfs,
    parse_system_profiler,
)

RECORDED = Path(__file__).parents[1] / "recorded"
#: What the recorded outputs hold that must never leave a parser.
PERSONAL = (
    "Jane",
    "jane",
    "Janes-MacBook-Pro",
    "Janes-iMac",
    "build-agent-07",
    "GX7DK2QW1059",
    "S5SUNF0R804219",
    "CCGCAQ002TDJ1MR0",
    "F4:D4:88:6A:13:7C",
    "8C-85-90-3B-7D-E1",
    "Contoso",
    "00330-80000-00000-AA123",
    "build-admin",
    "VID_8087",
)


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def leaks(facts: MachineFacts) -> list[str]:
    text = repr(facts)
    return [secret for secret in PERSONAL if secret in text]


# -- macOS ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("macos-14-apple-silicon.json", MachineFacts("14.4.1", PRESENT, PRESENT)),
        ("macos-11-intel.json", MachineFacts("11.7.10", PRESENT, PRESENT)),  # older Bluetooth layout
        ("macos-vm.json", MachineFacts("13.6.6", ABSENT, ABSENT)),  # no controller; USB 1.1 only
    ],
)
def test_system_profiler_output_is_parsed_to_coarse_facts(sample: str, expected: MachineFacts) -> None:
    facts = parse_system_profiler(recorded(sample))
    assert facts == expected
    assert leaks(facts) == []


def test_a_high_speed_device_counts_whatever_its_bus_is_called() -> None:
    device = {"_name": "Jane's hub", "device_speed": "full_speed", "_items": [{"device_speed": "high_speed"}]}
    raw = {"SPUSBDataType": [{"_name": "Bus", "_items": [device]}], "SPBluetoothDataType": []}
    assert parse_system_profiler(json.dumps(raw)).usb_high_speed == PRESENT
    device["_items"] = [{"device_speed": "low_speed"}]
    assert parse_system_profiler(json.dumps(raw)).usb_high_speed == ABSENT


@pytest.mark.parametrize(
    "raw",
    [None, b"", b"not json", b"[]", b'{"SPSoftwareDataType": "x"}', b'{"SPUSBDataType": [1, "a", {"_items": "x"}]}'],
)
def test_system_profiler_output_the_parser_does_not_know_is_unknown(raw: bytes | None) -> None:
    facts = parse_system_profiler(raw)
    assert facts.os_version is None and facts.bluetooth == UNKNOWN
    assert facts.usb_high_speed in {UNKNOWN, ABSENT}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=20), inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["SPBluetoothDataType", "SPUSBDataType", "SPSoftwareDataType", "_items", "_name"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=3))
def test_no_system_profiler_output_makes_the_parser_raise(raw: dict[str, Any]) -> None:
    facts = parse_system_profiler(json.dumps(raw))
    assert {facts.bluetooth, facts.usb_high_speed} <= {PRESENT, ABSENT, UNKNOWN}


def test_the_macos_fetch_runs_system_profiler_and_nothing_reads_what_it_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stand-in ``system_profiler`` on the PATH prints a recorded output, if asked exactly the data
    types the fetch names; the whole macOS path then runs here as on a Mac."""
    (tmp_path / "sample.json").write_bytes(recorded("macos-14-apple-silicon.json"))
    args = " ".join(mf.SYSTEM_PROFILER[1:])
    stand_in = tmp_path / "system_profiler"
    stand_in.write_text(f'#!/bin/sh\n[ "$*" = "{args}" ] || exit 2\ncat "{tmp_path}/sample.json"\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert machine_facts("darwin") == MachineFacts("14.4.1", PRESENT, PRESENT)
    stand_in.write_text("#!/bin/sh\necho 'system_profiler: something went wrong' >&2\nexit 1\n")
    assert machine_facts("darwin") == MachineFacts(None)  # failed: unknown, not a crash


def test_without_system_profiler_the_macos_facts_are_unknown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert machine_facts("darwin") == MachineFacts(None)


# -- Windows --------------------------------------------------------------------------------------------


class RecordedRegistry:
    """A registry read from a recorded dump (``tests/recorded/windows-*.json``), answering as ``winreg``
    does (``FileNotFoundError`` for a missing key or value; names without case), and noting every read."""

    HKEY_LOCAL_MACHINE = 0x80000002

    def __init__(self, dump: dict[str, dict[str, Any]]) -> None:
        self.keys = {path.lower(): {name.lower(): v for name, v in values.items()} for path, values in dump.items()}
        self.opened: list[str] = []
        self.read: list[tuple[str, str]] = []

    def OpenKey(self, key: int, sub_key: str, /) -> _Key:
        assert key == self.HKEY_LOCAL_MACHINE
        self.opened.append(sub_key)
        if sub_key.lower() not in self.keys:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return _Key(sub_key.lower())

    def QueryValueEx(self, key: _Key, name: str, /) -> tuple[Any, int]:
        self.read.append((key.path, name))
        values = self.keys[key.path]
        if name.lower() not in values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        value = values[name.lower()]
        return value, 4 if isinstance(value, int) else 1  # REG_DWORD or REG_SZ


class _Key:
    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> _Key:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        ("windows-11-registry.json", MachineFacts("10.0.22631.3447", PRESENT, PRESENT)),
        ("windows-server-vm-registry.json", MachineFacts("10.0.17763.5458", ABSENT, ABSENT)),
    ],
)
def test_the_windows_fetch_reads_named_values_only_and_the_parser_makes_coarse_facts(
    sample: str, expected: MachineFacts
) -> None:
    registry = RecordedRegistry(json.loads(recorded(sample)))
    raw = fetch_registry(registry)
    assert raw is not None
    facts = parse_registry(raw)
    assert facts == expected
    assert leaks(facts) == [] and [s for s in PERSONAL if s in json.dumps(raw)] == []
    # Never a value that is not named (RegisteredOwner, ProductId, a device's instance id, pairing keys).
    version_key = mf.CURRENT_VERSION.lower()
    allowed = {(version_key, name) for name in mf.VERSION_VALUES}
    allowed |= {
        (rf"{mf.SERVICES}\{d}\Enum".lower(), "Count") for d in (*mf.BLUETOOTH_DRIVERS, *mf.USB_HIGH_SPEED_DRIVERS)
    }
    assert set(registry.read) <= allowed
    assert not [k for k in registry.opened if "parameters" in k.lower()]


def test_the_windows_fetch_output_is_what_the_parser_reads() -> None:
    raw = fetch_registry(RecordedRegistry(json.loads(recorded("windows-11-registry.json"))))
    assert raw == {
        "CurrentVersion": {
            "CurrentMajorVersionNumber": 10,
            "CurrentMinorVersionNumber": 0,
            "CurrentBuildNumber": "22631",
            "UBR": 3447,
            "CurrentVersion": "6.3",
        },
        "DriverDevices": {"BTHPORT": 0, "BTHUSB": 1, "usbehci": 0, "USBXHCI": 2},
    }


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ({"CurrentVersion": "6.1", "CurrentBuildNumber": "7601"}, "6.1.7601"),  # Windows 7: no major/minor values
        (
            {"CurrentMajorVersionNumber": 10, "CurrentMinorVersionNumber": 0, "CurrentBuildNumber": "19045"},
            "10.0.19045",
        ),
        ({"CurrentMajorVersionNumber": 10, "CurrentMinorVersionNumber": 0, "CurrentBuildNumber": "x"}, "10.0"),
        ({"CurrentMajorVersionNumber": "10", "CurrentVersion": "Jane"}, None),
        ({}, None),
    ],
)
def test_windows_versions(version: dict[str, Any], expected: str | None) -> None:
    assert parse_registry({"CurrentVersion": version}).os_version == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"DriverDevices": "x"},
        {"DriverDevices": {"BTHPORT": 1}},  # one driver not asked: not guessed
        {"DriverDevices": {"BTHPORT": "1", "BTHUSB": 0, "usbehci": True, "USBXHCI": -1}},
    ],
)
def test_registry_data_the_parser_does_not_know_is_unknown(raw: Any) -> None:
    assert parse_registry(raw) == MachineFacts(None, UNKNOWN, UNKNOWN)


def test_a_registry_that_cannot_be_read_gives_unknown() -> None:
    class Refusing(RecordedRegistry):
        def OpenKey(self, key: int, sub_key: str, /) -> _Key:
            raise PermissionError(5, "Access is denied")

    assert parse_registry(fetch_registry(Refusing({}))) == MachineFacts(None)


def test_off_windows_the_windows_fetch_asks_nothing() -> None:
    assert sys.platform != "win32"
    assert fetch_registry() is None and machine_facts("win32") == MachineFacts(None)


# -- Linux and the rest ---------------------------------------------------------------------------------


def test_this_linux_machines_facts_come_from_sysfs() -> None:
    facts = machine_facts("linux")
    assert facts == parse_sysfs(fetch_sysfs())
    assert facts.os_version and {facts.bluetooth, facts.usb_high_speed} <= {PRESENT, ABSENT, UNKNOWN}


def test_other_platforms_report_their_release_and_no_features() -> None:
    facts = machine_facts("freebsd14")
    assert facts.os_version and (facts.bluetooth, facts.usb_high_speed) == (UNKNOWN, UNKNOWN)
