"""ceip product plugin for My Product."""
