"""``python -m ceip_core`` is the ``ceip`` command (the background uploader runs itself this way)."""

from ceip_core.cli import main

main()
