"""Small plugins used by tests/test_plugins.py to exercise the plugin host."""
