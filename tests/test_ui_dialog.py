"""The feedback dialogs on a real X display: Xvfb, clicks through the X server (xdotool), the consent
state read back from disk, and a screenshot (ImageMagick's ``import``) that must show the window.

Debian packages: xvfb, xdotool, imagemagick (``.ci/run`` installs them); the Python needs tkinter.
Set ``CEIP_SCREENSHOTS=folder`` to keep the screenshots.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import unavailable, wait_for

from ceip_core.consent import Consent, State
from ceip_core.records import Category
from ceip_core.statedb import StateDB

SIZE = (1024, 900)


def _tool(name: str, package: str) -> str:
    found = shutil.which(name)
    if found is None:
        unavailable(f"{name} is not installed (apt-get install {package})")
    return found


@pytest.fixture(scope="session")
def display() -> Iterator[str]:
    """A fresh Xvfb server on a display number it picks itself (``-displayfd``), so runs never collide.

    It lives until the session ends: tk keeps its connection to a display open after its last window is
    gone, and the next tk event loop in this process (any later test) would exit the process if the
    server had gone away."""
    xvfb = _tool("Xvfb", "xvfb")
    for name, package in (("xdotool", "xdotool"), ("import", "imagemagick")):
        _tool(name, package)
    try:
        import tkinter  # noqa: F401
    except ImportError as exc:
        unavailable(f"this Python has no tkinter ({exc}); see docs/users.md")
    read, write = os.pipe()
    screen = f"{SIZE[0]}x{SIZE[1]}x24"
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write), "-screen", "0", screen, "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 30)
        number = os.read(read, 32).decode().strip() if ready else ""
        assert number.isdigit(), f"Xvfb did not start (exit code {proc.poll()})"
        yield f":{number}"
    finally:
        os.close(read)
        proc.terminate()
        proc.wait(10)


def xdotool(display: str, *args: str) -> str:
    env = {**os.environ, "DISPLAY": display}
    done = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def screenshot(display: str, name: str, tmp_path: Path) -> tuple[int, int, bytes]:
    """The whole screen as RGB pixels (width, height, bytes); also saved as PNG for a person to look at."""
    env = {**os.environ, "DISPLAY": display}
    png = Path(os.environ.get("CEIP_SCREENSHOTS") or tmp_path) / f"{name}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["import", "-window", "root", str(png)], env=env, check=True, timeout=60)
    ppm = subprocess.run(
        ["import", "-window", "root", "-depth", "8", "ppm:-"], env=env, capture_output=True, check=True, timeout=60
    ).stdout
    # binary PPM: "P6\n<w> <h>\n<max>\n" then w*h*3 bytes
    magic, width, height, maxval, pixels = ppm.split(maxsplit=4)
    assert magic == b"P6" and maxval == b"255", ppm[:20]
    return int(width), int(height), pixels


def colours(shot: tuple[int, int, bytes], box: tuple[int, int, int, int]) -> set[bytes]:
    """The distinct colours inside ``box`` (x, y, width, height) of a screenshot."""
    width, _, pixels = shot
    x, y, w, h = box
    found: set[bytes] = set()
    for row in range(y, y + h):
        line = pixels[(row * width + x) * 3 : (row * width + x + w) * 3]
        found.update(line[i : i + 3] for i in range(0, len(line), 3))
    return found


@pytest.fixture
def tk_root(display: str) -> Iterator[object]:
    import tkinter as tk

    root = tk.Tk(screenName=display)
    root.withdraw()  # only the dialog shows, at the top left of a screen without a window manager
    try:
        yield root
    finally:
        root.destroy()


def click(display: str, root, widget) -> None:
    """A real click: the pointer moves to the middle of ``widget`` and the X server sends the button."""
    wait_for(lambda: (root.update(), widget.winfo_viewable())[1], timeout=10)
    x = widget.winfo_rootx() + widget.winfo_width() // 2
    y = widget.winfo_rooty() + widget.winfo_height() // 2
    xdotool(display, "mousemove", "--sync", str(x), str(y), "click", "1")


def until(root, condition: Callable[[], object]) -> object:
    """Let tk handle events until ``condition`` holds (deadline 10 s)."""
    return wait_for(lambda: (root.update(), condition())[1], timeout=10)


def test_opt_in_reset_opt_out_by_clicking(display: str, tk_root, sample, ceip_home: Path, tmp_path: Path) -> None:
    from ceip_core.ui.model import OptionsModel
    from ceip_core.ui.view import OptionsDialog

    dialog = OptionsDialog(tk_root, OptionsModel(sample, StateDB(ceip_home), ["sample"]))
    disk = Consent(StateDB(ceip_home))
    assert str(dialog.reset_button.cget("state")) == "disabled"  # no machine ID before the first opt-in

    click(display, tk_root, dialog.take_part["sample"])
    until(tk_root, lambda: disk.state("sample") is State.IN)
    first_guid = disk.guid()
    assert first_guid and dialog.guid_label.cget("text") == f"Machine ID: {first_guid}"
    assert "taking part" in str(dialog.status.cget("text"))

    # every kind of information is ticked after a plain "yes"; unticking one narrows consent to the others
    assert all(v.get() for v in dialog.sending["sample"].values())
    click(display, tk_root, dialog.send["sample"][Category.PERFORMANCE])
    until(tk_root, lambda: disk.categories("sample") == {Category.CONFIGURATION, Category.PROGRAM_USE})
    assert "No longer sent: Performance and reliability." in str(dialog.status.cget("text"))
    assert not dialog.sending["sample"][Category.PERFORMANCE].get()
    click(display, tk_root, dialog.take_part["sample"])  # "yes" again does not widen what was chosen
    until(tk_root, lambda: "some kinds of information only" in str(dialog.status.cget("text")))
    assert disk.categories("sample") == {Category.CONFIGURATION, Category.PROGRAM_USE}

    click(display, tk_root, dialog.reset_button)
    until(tk_root, lambda: disk.guid() not in (None, first_guid))
    assert json.loads((ceip_home / "identity.json").read_text())["guid"] == disk.guid()

    shot = screenshot(display, "options-dialog", tmp_path)
    assert shot[:2] == SIZE
    win = dialog.window
    box = (win.winfo_rootx(), win.winfo_rooty(), win.winfo_width(), win.winfo_height())
    assert box[2] > 300 and box[3] > 300, box
    assert len(colours(shot, box)) >= 3, "the dialog's area is blank"
    assert colours(shot, (SIZE[0] - 10, SIZE[1] - 10, 10, 10)) == {b"\0\0\0"}  # the bare screen is black

    # a change made elsewhere (``ceip consent out sample`` in a shell) shows in the open window
    Consent(StateDB(ceip_home)).opt_out("sample")
    until(tk_root, lambda: dialog.choice["sample"].get() == "out")
    assert dialog.state_label["sample"].cget("text") == "Not taking part."
    click(display, tk_root, dialog.take_part["sample"])
    until(tk_root, lambda: disk.state("sample") is State.IN)

    click(display, tk_root, dialog.decline["sample"])
    until(tk_root, lambda: disk.state("sample") is State.OUT)
    assert disk.guid() is None
    assert "machine ID was deleted" in str(dialog.status.cget("text"))
    assert str(dialog.reset_button.cget("state")) == "disabled"

    click(display, tk_root, dialog.close_button)
    until(tk_root, lambda: not dialog.window.winfo_exists())


def test_first_run_asks_once(display: str, tk_root, sample, ceip_home: Path, tmp_path: Path) -> None:
    from ceip_core.ui import ask_once
    from ceip_core.ui.model import FirstRun, OptionsModel
    from ceip_core.ui.view import FirstRunDialog

    first = FirstRun(OptionsModel(sample, StateDB(ceip_home), ["sample"]), "sample")
    dialog = FirstRunDialog(tk_root, first)
    until(tk_root, dialog.window.winfo_viewable)
    shot = screenshot(display, "first-run", tmp_path)
    win = dialog.window
    assert len(colours(shot, (win.winfo_rootx(), win.winfo_rooty(), win.winfo_width(), win.winfo_height()))) >= 3
    click(display, tk_root, dialog.yes_button)
    until(tk_root, lambda: not dialog.window.winfo_exists())
    assert Consent(StateDB(ceip_home)).states() == {"sample": State.IN}
    assert ask_once("sample", master=tk_root, plugins=sample) is False  # never again


def test_ceip_options_opens_the_dialog_in_german(display: str, sample, tmp_path: Path) -> None:
    """``ceip options sample`` under LANGUAGE=de: the window has the German title and closes on Escape."""
    env = {**os.environ, "DISPLAY": display, "LANGUAGE": "de"}
    proc = subprocess.Popen([sys.executable, "-m", "ceip_core", "options", "sample"], env=env, stderr=subprocess.PIPE)
    try:
        # xdotool's pattern matching is byte-wise: find the window by its ASCII part, then compare the title
        window = xdotool(display, "search", "--sync", "--name", "^Optionen f.*r Kundenfeedback$").split()[0]
        assert xdotool(display, "getwindowname", window).strip() == "Optionen für Kundenfeedback"
        shot = screenshot(display, "options-de", tmp_path)
        geometry = dict(line.split("=") for line in xdotool(display, "getwindowgeometry", "--shell", window).split())
        box = (int(geometry["X"]), int(geometry["Y"]), int(geometry["WIDTH"]), int(geometry["HEIGHT"]))
        assert len(colours(shot, box)) >= 3
        xdotool(display, "windowfocus", "--sync", window, "key", "Escape")
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
