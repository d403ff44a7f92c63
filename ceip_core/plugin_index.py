"""Which installed plugin implements which hook, remembered between processes.

Loading the plugins (pluggy, the records, every plugin's module and what it imports) is most of what a short
command costs. Some commands only announce something to whichever plugins listen: ``ceip consent out X``
calls ``ceip_consent_changed``, which few plugins implement or none. Every full load writes this index;
a later process that finds it valid for the same environment can tell, with a few ``stat`` calls and no
plugin import, that nobody listens, and skip the load.

The index is valid only for the environment it was written in. Its key holds the interpreter, ``sys.path``,
the modification time of every folder on it (installing or removing a distribution changes its
``site-packages`` folder) and the plugin switches in the environment (``CEIP_LOAD_PLUGINS`` ...); each
plugin's module file is checked by size and modification time, so editing an editable plugin rebuilds it.
Anything unreadable, stale or from another version counts as no index: the caller then loads the plugins
as it would without one. The index decides only whether a lifecycle hook is worth loading plugins for;
consent, the allowlist and scrubbing never depend on it.

Standard library only, and small: it is read on the command line's fast path.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

#: Bumped when the file's layout changes; an index of another version is ignored.
FORMAT = 2
#: The environment variables that change which plugins load (``ceip_core.plugins``).
SWITCHES = ("CEIP_LOAD_PLUGINS", "CEIP_BLOCK_PLUGINS", "CEIP_PLUGIN_MODULES")


def environment_key() -> str:
    """What decides which plugins a full load finds in this process's environment, as one string (kept
    whole in the index and compared whole: no digest to compute on the command line's fast path)."""
    parts: list[object] = [FORMAT, sys.executable, sys.version, [os.environ.get(name) for name in SWITCHES]]
    for entry in sys.path:
        try:
            parts.append([entry, os.stat(entry or ".").st_mtime_ns])
        except OSError:
            parts.append([entry, None])
    return json.dumps(parts)


def index_path(folder: Path) -> Path:
    """Where the index of this environment lives in the state folder ``folder`` (one file per
    interpreter, so two virtual environments sharing a state folder keep one each)."""
    return folder / "cache" / f"plugins-{zlib.crc32(sys.executable.encode()):08x}.json"


def _file_signature(path: str | None) -> list[int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def refresh(folder: Path, hooks_by_plugin: Mapping[str, tuple[str | None, Iterable[str]]]) -> None:
    """Record ``{plugin name: (its module's file or None, the hooks it implements)}`` for this environment,
    unless the index there is current already. Only into a state folder that exists: loading plugins
    never creates one. Written whole under a temporary name and renamed, so a reader sees the old index
    or the new one; a failure to write is not an error (the next process loads the plugins again)."""
    if not folder.is_dir() or _current(folder) is not None:
        return
    from ceip_core.private_files import private_file, private_folder

    plugins = {
        name: {"file": file, "signature": _file_signature(file), "hooks": sorted(hooks)}
        for name, (file, hooks) in sorted(hooks_by_plugin.items())
    }
    doc = {"format": FORMAT, "key": environment_key(), "plugins": plugins}
    path = index_path(folder)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        private_folder(path.parent)
        private_file(tmp)
        tmp.write_text(json.dumps(doc, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def implementers(folder: Path, hook: str) -> list[str] | None:
    """The plugins that implement ``hook`` by this environment's index, or None if there is no valid index."""
    plugins = _current(folder)
    if plugins is None:
        return None
    return sorted(name for name, hooks in plugins.items() if hook in hooks)


def _current(folder: Path) -> dict[str, list[str]] | None:
    """``{plugin: hooks}`` from the index if it is valid for this environment; None if it is missing,
    unreadable, of another format or environment, or a plugin's module file changed since."""
    try:
        doc = json.loads(index_path(folder).read_text())
        if doc.get("format") != FORMAT or doc.get("key") != environment_key():
            return None
        plugins = {}
        for name, entry in doc["plugins"].items():
            if entry["file"] is not None and _file_signature(entry["file"]) != entry["signature"]:
                return None
            plugins[str(name)] = [str(h) for h in entry["hooks"]]
        return plugins
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
