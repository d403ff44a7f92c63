"""ceip product plugin for Packager."""
