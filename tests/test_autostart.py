"""``ceip agent install`` / ``uninstall``: each platform's file, checked against its format on Linux
(``systemd-analyze verify``, ``plistlib``, the Task Scheduler schema's required elements), and the
commands it runs, checked with stand-ins of ``systemctl`` on the PATH."""

from __future__ import annotations

import os
import plistlib
import re
import shlex
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import unavailable

from ceip_core.autostart import (
    LAUNCHD_LABEL,
    NAME,
    TASK_NAMESPACE,
    Autostart,
    AutostartError,
    agent_command,
    install,
    plan,
    systemd_quote,
    uninstall,
)
from ceip_core.cli import cli

#: A state folder whose path needs quoting everywhere: spaces, a quote, systemd's specifier and variable signs.
AWKWARD = 'ceip home/it\'s 100% "$HOME"'


@pytest.fixture
def home(tmp_path: Path) -> Path:
    folder = tmp_path / AWKWARD
    folder.mkdir(parents=True)
    return folder


# -- Linux: systemd ------------------------------------------------------------------------------------


def systemd_words(line: str) -> list[str]:
    """A systemd command line back to its words (double quotes, backslash escapes, ``%%`` and ``$$``)."""
    return [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(line)]


def unit_sections(text: str) -> dict[str, dict[str, str]]:
    """The unit file's sections and settings, checking the format on the way: every line is empty, a
    comment, a ``[Section]`` or ``Key=value`` inside a section, and no key repeats."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line or line.startswith(("#", ";")):
            continue
        if found := re.fullmatch(r"\[([A-Za-z]+)\]", line):
            assert found.group(1) not in sections, line
            current = sections[found.group(1)] = {}
            continue
        found = re.fullmatch(r"([A-Za-z]+)=(.*)", line)
        assert found and current is not None and found.group(1) not in current, line
        current[found.group(1)] = found.group(2)
    return sections


@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_the_systemd_unit_starts_this_agent_and_has_the_units_format(tmp_path: Path, home: Path, system: bool) -> None:
    autostart = plan("linux", home, system=system, environ={"XDG_CONFIG_HOME": str(tmp_path / "config")})
    if system:
        assert autostart.path == Path("/etc/systemd/system/ceip-agent.service")
    else:
        assert autostart.path == tmp_path / "config" / "systemd" / "user" / "ceip-agent.service"
    unit = unit_sections(autostart.text)
    assert set(unit) == {"Unit", "Service", "Install"}
    assert systemd_words(unit["Service"]["ExecStart"]) == agent_command(home)
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == ("multi-user.target" if system else "default.target")
    if system:
        assert systemd_words(unit["Service"]["ReadWritePaths"]) == [str(home)]


@pytest.mark.parametrize("system", [False, True], ids=["user", "system"])
def test_systemd_accepts_the_unit(tmp_path: Path, home: Path, system: bool) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        unavailable("no systemd-analyze (Debian: apt-get install systemd); the unit's format is checked above")
    autostart = plan("linux", home, system=system, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    unit = tmp_path / f"{NAME}.service"
    unit.write_text(autostart.text)
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and NAME not in done.stderr, done.stderr
    # Positive control: systemd-analyze does complain about a unit it cannot run.
    unit.write_text(autostart.text.replace("ExecStart=/", "ExecStart="))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and NAME in done.stderr


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("a b", '"a b"'),
        ("100%", "100%%"),
        ("$HOME", "$$HOME"),
        ('"', '"\\""'),
    ],
)
def test_systemd_quoting(arg: str, word: str) -> None:
    assert systemd_quote(arg) == word and systemd_words(word) == [arg]


# -- macOS: launchd ------------------------------------------------------------------------------------


def test_the_launchd_agent_is_a_plist_that_starts_this_agent_at_login(tmp_path: Path, home: Path) -> None:
    autostart = plan("darwin", home, environ={"HOME": str(tmp_path)})
    assert autostart.path == tmp_path / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    plist = plistlib.loads(autostart.text.encode(autostart.encoding))
    assert plist["Label"] == LAUNCHD_LABEL
    assert plist["ProgramArguments"] == agent_command(home)
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert autostart.enable == (("launchctl", "bootstrap", f"gui/{os.getuid()}", str(autostart.path)),)
    assert autostart.disable == (("launchctl", "bootout", f"gui/{os.getuid()}/{LAUNCHD_LABEL}"),)


# -- Windows: Task Scheduler ---------------------------------------------------------------------------

#: The task schema's (taskschedulerschema.xsd, version 1.2) elements used here, with the values each may
#: take: a set of the allowed words, or a pattern.
BOOLEAN = {"true", "false"}
DURATION = re.compile(r"P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?")
SCHEMA_VALUES: dict[str, set[str] | re.Pattern[str] | None] = {
    "Enabled": BOOLEAN,
    "LogonType": {"S4U", "Password", "InteractiveToken", "InteractiveTokenOrPassword", "Group", "ServiceAccount"},
    "RunLevel": {"LeastPrivilege", "HighestAvailable"},
    "MultipleInstancesPolicy": {"Parallel", "Queue", "IgnoreNew", "StopExisting"},
    "DisallowStartIfOnBatteries": BOOLEAN,
    "StopIfGoingOnBatteries": BOOLEAN,
    "ExecutionTimeLimit": DURATION,
    "Interval": DURATION,
    "Count": re.compile(r"[1-9][0-9]*"),
    "Description": None,
    "URI": None,
    "UserId": None,
    "Command": None,
    "Arguments": None,
}
CONTAINERS = {"RegistrationInfo", "Triggers", "LogonTrigger", "Principals", "Principal", "Settings"}
CONTAINERS |= {"RestartOnFailure", "Actions", "Exec"}


def test_the_task_is_utf16_xml_with_the_schemas_required_elements(home: Path) -> None:
    python = r"C:\Program Files\Python312\python.exe"
    autostart = plan("win32", home, executable=python, environ={"USERDOMAIN": "WORKSTATION", "USERNAME": "jane"})
    raw = autostart.text.encode(autostart.encoding)
    assert raw.startswith(b"\xff\xfe")  # UTF-16 with its byte order mark, as schtasks /XML wants
    task = ET.fromstring(raw)
    ns = {"t": TASK_NAMESPACE}
    assert task.tag == f"{{{TASK_NAMESPACE}}}Task" and task.get("version") == "1.2"
    # Required by the schema: Actions, with at least one action; an Exec has a Command.
    [exec_] = task.findall("t:Actions/t:Exec", ns)
    assert exec_.findtext("t:Command", namespaces=ns) == python
    arguments = exec_.findtext("t:Arguments", namespaces=ns)
    assert arguments == f'-m ceip_core --home "{home}" agent'.replace('"$HOME"', '\\"$HOME\\"')
    assert task.find("t:Triggers/t:LogonTrigger", ns) is not None
    assert task.findtext("t:Principals/t:Principal/t:UserId", namespaces=ns) == r"WORKSTATION\jane"
    for element in task.iter():
        name = element.tag.removeprefix(f"{{{TASK_NAMESPACE}}}")
        assert element.tag.startswith(f"{{{TASK_NAMESPACE}}}"), element.tag
        if name in CONTAINERS or name == "Task":
            assert not (element.text or "").strip(), name
            continue
        assert name in SCHEMA_VALUES, f"{name} is not an element of the task schema used here"
        allowed, text = SCHEMA_VALUES[name], element.text or ""
        if isinstance(allowed, set):
            assert text in allowed, (name, text)
        elif allowed is not None:
            assert allowed.fullmatch(text), (name, text)
    assert autostart.path == home / f"{NAME}-task.xml"
    assert autostart.enable[0] == ("schtasks", "/Create", "/TN", NAME, "/XML", str(autostart.path), "/F")


def test_system_is_for_linux_only(home: Path) -> None:
    with pytest.raises(AutostartError, match="--system is for Linux"):
        plan("darwin", home, system=True)
    with pytest.raises(AutostartError, match="no autostart for sunos5"):
        plan("sunos5", home)


# -- installing and removing ---------------------------------------------------------------------------


class Recorder:
    """Runs nothing: notes each command and answers with the given exit codes (for install/uninstall's
    order of work; the real programs are run by the CLI tests below, as stand-ins on the PATH)."""

    def __init__(self, failing: frozenset[str] = frozenset()) -> None:
        self.commands: list[tuple[str, ...]] = []
        self.failing = failing

    def __call__(self, command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        words = tuple(command)
        self.commands.append(words)
        failed = any(word in self.failing for word in words)
        return subprocess.CompletedProcess(words, 1 if failed else 0, "", "Failed to connect to bus" if failed else "")


def test_install_writes_then_enables_and_a_second_install_stops_the_first(tmp_path: Path, home: Path) -> None:
    autostart = plan("linux", home, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    run = Recorder()
    install(autostart, run)
    assert autostart.path.read_text() == autostart.text
    assert run.commands == [*autostart.reload, *autostart.enable]
    run.commands.clear()
    install(autostart, run)
    assert run.commands == [*autostart.disable, *autostart.reload, *autostart.enable]


def test_a_failing_enable_says_which_command_and_leaves_the_file(tmp_path: Path, home: Path) -> None:
    autostart = plan("linux", home, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(
        AutostartError, match=r"daemon-reload failed \(exit 1\): Failed to connect to bus; .* is written"
    ):
        install(autostart, Recorder(failing=frozenset({"daemon-reload"})))
    assert autostart.path.exists()


def test_uninstall_stops_removes_and_reports_what_failed(tmp_path: Path, home: Path) -> None:
    autostart: Autostart = plan("linux", home, environ={"XDG_CONFIG_HOME": str(tmp_path)})
    install(autostart, Recorder())
    run = Recorder(failing=frozenset({"disable"}))
    assert uninstall(autostart, run) == [
        "systemctl --user disable --now ceip-agent.service failed (exit 1): Failed to connect to bus"
    ]
    assert not autostart.path.exists() and run.commands == [*autostart.disable, *autostart.reload]
    with pytest.raises(AutostartError, match="not installed"):
        uninstall(autostart, run)


# -- the commands --------------------------------------------------------------------------------------


@pytest.fixture
def systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in ``systemctl`` first on the PATH, writing its arguments to the returned log; the user's
    configuration folder moved into the test's folder (nothing is installed on this machine)."""
    if not sys.platform.startswith("linux"):
        unavailable("the commands' tests drive the Linux autostart")
    bin_dir, log = tmp_path / "bin", tmp_path / "systemctl.log"
    bin_dir.mkdir()
    stand_in = bin_dir / "systemctl"
    stand_in.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\n')
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return log


def test_agent_install_and_uninstall(systemctl: Path, tmp_path: Path, home: Path) -> None:
    unit = tmp_path / "config" / "systemd" / "user" / "ceip-agent.service"
    shown = CliRunner().invoke(cli, ["--home", str(home), "agent", "install", "--print"])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"# {unit}\n[Unit]\n") and "# then: systemctl --user daemon-reload" in shown.output
    assert not unit.exists() and not systemctl.exists()  # --print changes nothing

    done = CliRunner().invoke(cli, ["--home", str(home), "agent", "install"])
    assert done.exit_code == 0, done.output
    assert systemd_words(unit_sections(unit.read_text())["Service"]["ExecStart"]) == agent_command(home.resolve())
    assert systemctl.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable ceip-agent.service",
        "--user restart ceip-agent.service",
    ]
    systemctl.unlink()
    done = CliRunner().invoke(cli, ["--home", str(home), "agent", "uninstall"])
    assert done.exit_code == 0, done.output
    assert not unit.exists()
    assert systemctl.read_text().splitlines() == ["--user disable --now ceip-agent.service", "--user daemon-reload"]
    again = CliRunner().invoke(cli, ["--home", str(home), "agent", "uninstall"])
    assert again.exit_code == 1 and f"not installed: no {unit}" in again.output


def test_agent_options_do_not_go_with_install(systemctl: Path, home: Path) -> None:
    done = CliRunner().invoke(cli, ["--home", str(home), "agent", "--once", "install"])
    assert done.exit_code == 2 and "--once: for running the agent, not for 'agent install'" in done.output
    assert not systemctl.exists()
