"""ceip product plugin for Hub Server."""
