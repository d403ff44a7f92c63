"""The versions of ceip and of its wire schema, apart from the package's facade (``ceip_core/__init__.py``).

The facade loads the recorder and the uploader when a product calls them, so a module of the client that
imported it for the version would reach the top of the layers through it; this module is beneath them all.
"""

__version__ = "0.1.0"

#: Version of the report schema. Bump when a field changes meaning or a required field is added; the
#: receiving service uses it to pick a decoder. (``ceip_core.records.SCHEMA_VERSION`` is this one.)
SCHEMA_VERSION = 1
