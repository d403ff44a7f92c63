"""What a product carries when it embeds ceip, against what the vendor's service needs: the installed size
and the number of distributions of ``pip install ceip`` (the client) and ``pip install 'ceip[service]'``,
each in a fresh virtual environment, measured in one run.

    python bench/install_size.py       # about a minute or two: two venvs, installs from pip's cache

The size is that of the venv's site-packages, less what a bare venv already has (pip itself); the
distributions are those ``pip list`` shows, less pip.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())


def measure(target: str, into: Path) -> tuple[int, int, float]:
    """(bytes installed, distributions, seconds) for ``pip install target`` in a new venv at ``into``."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(into)], check=True)
    python = into / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    bare = _size(site)
    subprocess.run([python, "-m", "pip", "install", "-q", target], check=True)
    listed = json.loads(
        subprocess.run(
            [python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
        ).stdout
    )
    dists = [d["name"] for d in listed if d["name"].lower() not in ("pip", "setuptools")]
    return _size(site) - bare, len(dists), time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ceip-install-") as tmp:
        rows = [
            ("pip install ceip (the client)", measure(str(ROOT), Path(tmp) / "client")),
            ("pip install 'ceip[service]'", measure(f"{ROOT}[service]", Path(tmp) / "service")),
        ]
    print(f"{'install':<34}{'installed size':>16}{'distributions':>15}{'took':>8}")
    for name, (size, dists, took) in rows:
        print(f"{name:<34}{size / 1e6:>13.1f} MB{dists:>15}{took:>7.0f}s")


if __name__ == "__main__":
    main()
