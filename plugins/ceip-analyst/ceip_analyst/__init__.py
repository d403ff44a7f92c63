"""ceip product plugin for Analyst."""
