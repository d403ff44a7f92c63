"""The dialog's words, looked up through gettext in the ``ceip`` text domain.

ceip ships its catalogs in ``ceip_core/ui/locale`` (``<language>/LC_MESSAGES/ceip.mo``); gettext picks the
language from ``LANGUAGE``, ``LC_ALL``, ``LC_MESSAGES`` and ``LANG`` as usual, and falls back to the English
in the code. A product that wants another language, or its own wording, compiles its own ``ceip.po`` and
hands the dialog its own translations object (see :func:`translations`).
"""

from __future__ import annotations

import gettext
from collections.abc import Sequence
from pathlib import Path

#: The gettext text domain of every string in the dialog.
DOMAIN = "ceip"
#: The catalogs that ship with ceip.
LOCALE_DIR = Path(__file__).with_name("locale")


def translations(localedir: Path | None = None, languages: Sequence[str] | None = None) -> gettext.NullTranslations:
    """The ``ceip`` catalog for the person's language from ``localedir`` (default: ceip's own), or the
    English in the code when there is none. ``languages`` overrides the environment."""
    return gettext.translation(
        DOMAIN, localedir or LOCALE_DIR, languages=list(languages) if languages else None, fallback=True
    )
