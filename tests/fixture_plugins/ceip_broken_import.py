"""A plugin module that cannot be imported (tests/test_plugin_failures.py)."""

raise RuntimeError("this plugin is broken on purpose")
