"""The system collector: coarse machine configuration, never an identifier, ``unknown`` rather than a guess."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from ceip_core import wire
from ceip_core.collectors import CollectContext
from ceip_core.default_plugins.machine_facts import MachineFacts, fetch_sysfs, parse_sysfs
from ceip_core.default_plugins.system_collector import (
    BOOT_AGE_BUCKETS,
    BOOT_AGE_TOP,
    GIB,
    MEMORY_BUCKETS,
    MEMORY_TOP,
    SystemCollector,
    boot_age_bucket,
    memory_bucket,
    system_info,
)
from ceip_core.records import Period, Report, SystemInfo


def test_the_collector_reports_this_machine_coarsely() -> None:
    [info] = asyncio.run(SystemCollector().collect(CollectContext(products=())))
    assert isinstance(info, SystemInfo)
    assert info.cpu_logical == psutil.cpu_count() and info.cpu_logical >= 1
    assert info.memory_bucket in {name for _, name in MEMORY_BUCKETS} | {MEMORY_TOP}
    assert info.boot_age_bucket in {name for _, name in BOOT_AGE_BUCKETS} | {BOOT_AGE_TOP}
    assert info.os and info.arch and info.os_version
    assert info.net_interfaces_up is not None and info.net_interfaces_up >= 0
    assert set(info.features) == {"bluetooth", "usb_high_speed"}
    assert set(info.features.values()) <= {"present", "absent", "unknown"}


def test_no_host_name_address_or_exact_number_leaves_the_machine() -> None:
    [info] = asyncio.run(SystemCollector().collect(CollectContext(products=())))
    now = datetime.now(UTC)
    text = wire.encode_item(Report("r", "g", "sample", "1", Period(now, now), system=info)).decode()
    secrets = {socket.gethostname(), str(psutil.virtual_memory().total), str(int(psutil.boot_time()))}
    for addresses in psutil.net_if_addrs().values():
        secrets |= {a.address.split("%")[0] for a in addresses if a.address}  # IPs and MACs
    secrets -= {"", "::1", "127.0.0.1", "00:00:00:00:00:00"}  # loopback is no secret, and absent anyway
    assert not [s for s in secrets if s in text], text


@pytest.mark.parametrize(
    ("gib", "bucket"),
    [
        (0.5, "<2 GiB"),
        (1.9, "2-4 GiB"),
        (3.8, "4-8 GiB"),
        (7.7, "8-16 GiB"),
        (12, "8-16 GiB"),
        (15.6, "16-32 GiB"),
        (31.2, "32-64 GiB"),
        (63.5, MEMORY_TOP),
        (512, MEMORY_TOP),
    ],
)
def test_memory_buckets_count_whole_gib_rounded_up(gib: float, bucket: str) -> None:
    # A machine with 16 GiB installed reports about 15.6 GiB (the OS keeps some): it is a 16 GiB machine.
    assert memory_bucket(int(gib * GIB)) == bucket


@pytest.mark.parametrize(
    ("seconds", "bucket"),
    [(10, "<1 h"), (3600, "1-24 h"), (86399, "1-24 h"), (86400, "1-7 d"), (29 * 86400, "7-30 d"), (1e8, ">=30 d")],
)
def test_boot_age_buckets(seconds: float, bucket: str) -> None:
    assert boot_age_bucket(seconds) == bucket


def _sysfs(root: Path, *, bluetooth: list[str], usb_speeds: list[str] | None) -> Path:
    (root / "class" / "bluetooth").mkdir(parents=True)
    for adapter in bluetooth:
        (root / "class" / "bluetooth" / adapter).mkdir()
    (root / "bus").mkdir()
    if usb_speeds is not None:
        for i, speed in enumerate(usb_speeds):
            (root / "bus" / "usb" / "devices" / f"usb{i}").mkdir(parents=True)
            (root / "bus" / "usb" / "devices" / f"usb{i}" / "speed").write_text(speed + "\n")
    return root


@pytest.mark.parametrize(
    ("bluetooth", "usb_speeds", "expected"),
    [
        (["hci0"], ["12", "480"], {"bluetooth": "present", "usb_high_speed": "present"}),
        ([], ["1.5", "12"], {"bluetooth": "absent", "usb_high_speed": "absent"}),
        ([], ["5000"], {"bluetooth": "absent", "usb_high_speed": "present"}),
        ([], None, {"bluetooth": "absent", "usb_high_speed": "absent"}),  # no USB bus at all
        (["hci0"], ["fast"], {"bluetooth": "present", "usb_high_speed": "unknown"}),  # unreadable: not guessed
        ([], ["fast", "480"], {"bluetooth": "absent", "usb_high_speed": "present"}),  # one fast port is enough
    ],
)
def test_hardware_features_are_read_from_sysfs(
    tmp_path: Path, bluetooth: list[str], usb_speeds: list[str] | None, expected: dict[str, str]
) -> None:
    facts = parse_sysfs(fetch_sysfs(_sysfs(tmp_path / "sys", bluetooth=bluetooth, usb_speeds=usb_speeds)))
    assert facts.features() == expected


def test_without_sysfs_hardware_features_are_unknown(tmp_path: Path) -> None:
    facts = parse_sysfs(fetch_sysfs(tmp_path / "no-sys"))
    assert facts.features() == {"bluetooth": "unknown", "usb_high_speed": "unknown"} and facts.os_version


def test_the_collector_reports_what_the_platform_tells() -> None:
    facts = MachineFacts("10.0.22631.3447", "present", "absent")  # what a Windows machine's registry told
    info = system_info(facts)
    assert (info.os_version, info.features) == ("10.0.22631.3447", {"bluetooth": "present", "usb_high_speed": "absent"})
