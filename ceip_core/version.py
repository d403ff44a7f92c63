"""The version of ceip, apart from the package's facade (``ceip_core/__init__.py``).

The facade loads the recorder and the uploader when a product calls them, so a module of the client that
imported it for the version would reach the top of the layers through it; this module is beneath them all.
"""

__version__ = "0.1.0"
