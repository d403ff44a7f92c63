"""What the agent says about itself: one typed record, written to ``agent.json`` in the state folder by the
agent and read back by ``ceip status`` (and whoever waits for an agent), through the one encoder and the one
decoder here.

Reading never fails: a file that is missing, damaged or not what this version writes leaves the record at
its defaults, with :attr:`AgentStatus.unreadable` saying what was wrong, and the state is then what the
agent's lock says. A file from an older agent that lacks some fields reads with those at their defaults;
fields this version does not know (a newer agent's) are ignored. Standard library and ``agent_state`` only,
so that ``ceip status`` reads it without loading the agent.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast, get_args

from ceip_core.agent_state import STATUS_FILE, running_agent

#: What the agent writes: it is starting (its first collection is under way), running, or it stopped.
Written: TypeAlias = Literal["starting", "running", "stopped"]
#: What a reader says, from the file and the lock: also ``stopped unexpectedly`` (it died while running:
#: the file says running, the lock is free) and ``never run`` (no file).
State: TypeAlias = Literal["starting", "running", "stopped", "stopped unexpectedly", "never run"]


@dataclass
class LastUpload:
    """The agent's last upload that sent anything."""

    at: float
    accepted: int
    retried: int


@dataclass
class AgentStatus:
    """The agent's own account of itself. The agent changes its copy as it works and writes it whole."""

    state: State = "never run"
    pid: int | None = None
    """The agent's process (while it runs, the one that holds the lock; -1 if the lock names none)."""
    started: float | None = None
    updated: float | None = None
    """When the agent last wrote the file."""
    observing: dict[str, list[str]] = field(default_factory=dict)
    """Per active product, the names of its executables the agent looks for."""
    sessions_ended: int = 0
    reports_sealed: int = 0
    last_seal: float | None = None
    last_periodic_seal: float | None = None
    """When the agent last sealed every product (survives restarts: the next periodic seal is due from it)."""
    upload_to: str | None = None
    last_upload: LastUpload | None = None
    collector_troubles: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per collector, how often a pass failed, overran its budget, was skipped, or an observation was dropped."""
    unreadable: str | None = None
    """Why ``agent.json`` could not be read (the other fields are then defaults); never written to the file."""

    def as_json(self) -> dict[str, Any]:
        """The record as JSON values: what ``ceip status --json`` shows under ``agent``."""
        return dataclasses.asdict(self)


def encode(status: AgentStatus) -> str:
    """The text of ``agent.json``."""
    saved = status.as_json()
    del saved["unreadable"]
    return json.dumps(saved, indent=2, sort_keys=True)


def decode(text: str) -> AgentStatus:
    """The record in the text of an ``agent.json``; raises ValueError naming what is wrong. Fields it
    lacks take their defaults; fields this version does not know are ignored."""
    try:
        saved = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(saved, dict):
        raise ValueError(f"not a JSON object but {type(saved).__name__}")
    state = saved.get("state")
    if state not in get_args(Written):
        raise ValueError(f"'state' is {state!r}, not one of {', '.join(get_args(Written))}")
    upload = _value(saved, "last_upload", dict)
    observing = _value(saved, "observing", dict) or {}
    troubles = _value(saved, "collector_troubles", dict) or {}
    return AgentStatus(
        state=cast(State, state),
        pid=_value(saved, "pid", int),
        started=_time(saved, "started"),
        updated=_time(saved, "updated"),
        observing={product: _names(observing, product, "observing.") for product in observing},
        sessions_ended=_value(saved, "sessions_ended", int) or 0,
        reports_sealed=_value(saved, "reports_sealed", int) or 0,
        last_seal=_time(saved, "last_seal"),
        last_periodic_seal=_time(saved, "last_periodic_seal"),
        upload_to=_value(saved, "upload_to", str),
        last_upload=None
        if upload is None
        else LastUpload(
            at=_time(upload, "at", "last_upload.") or 0.0,
            accepted=_value(upload, "accepted", int, "last_upload.") or 0,
            retried=_value(upload, "retried", int, "last_upload.") or 0,
        ),
        collector_troubles={name: _counts(troubles, name) for name in troubles},
    )


def _value(saved: dict[str, Any], key: str, kind: type[Any], where: str = "") -> Any:
    """``saved[key]`` if it is a ``kind``, None if it is missing or null; raises ValueError otherwise."""
    value = saved.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):  # True is an int too
        raise ValueError(f"'{where}{key}' is {value!r}, not {_KINDS.get(kind, kind.__name__)}")
    return value


_KINDS = {int: "a whole number", dict: "an object", list: "a list", str: "a string"}


def _time(saved: dict[str, Any], key: str, where: str = "") -> float | None:
    """A time in seconds since the epoch (JSON has one kind of number: a whole one is a time too)."""
    value = saved.get(key)
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return None if value is None else float(value)
    raise ValueError(f"'{where}{key}' is {value!r}, not a time in seconds")


def _names(saved: dict[str, Any], key: str, where: str) -> list[str]:
    names = _value(saved, key, list, where) or []
    if not all(isinstance(name, str) for name in names):
        raise ValueError(f"'{where}{key}' is {names!r}, not a list of names")
    return names


def _counts(saved: dict[str, Any], key: str) -> dict[str, int]:
    counts = _value(saved, key, dict, "collector_troubles.") or {}
    return {what: _value(counts, what, int, f"collector_troubles.{key}.") or 0 for what in counts}


def read_status(folder: Path) -> AgentStatus:
    """What the agent of ``folder`` last said about itself, with its state checked against the lock:
    ``starting`` (its first collection is under way, or the file is an earlier agent's), ``running``,
    ``stopped``, ``stopped unexpectedly`` (it died without stopping) or ``never run``. Never raises: a
    file that cannot be read is said so in :attr:`AgentStatus.unreadable`, and the state is then the
    lock's."""
    path = folder / STATUS_FILE
    try:
        status = decode(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        status = AgentStatus()
    except OSError as exc:
        status = AgentStatus(unreadable=f"cannot read {path}: {exc.strerror or exc}")
    except ValueError as exc:  # UnicodeDecodeError too
        status = AgentStatus(unreadable=f"{path} is not what an agent writes: {exc}")
    pid = running_agent(folder)
    if pid is not None:
        # The file says "running" for the agent that holds the lock only if that agent wrote it: one that
        # was just started over a killed one's file has not finished its first collection yet.
        mine = status.state == "running" and status.pid == pid
        return dataclasses.replace(status, state="running" if mine else "starting", pid=pid)
    if status.state == "running":
        return dataclasses.replace(status, state="stopped unexpectedly")
    return status


def write_status(folder: Path, status: AgentStatus) -> None:
    """Write ``agent.json`` whole or not at all (a reader never sees half a file). Raises OSError."""
    path = folder / STATUS_FILE
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(encode(status), encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["AgentStatus", "LastUpload", "State", "decode", "encode", "read_status", "write_status"]
