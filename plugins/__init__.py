"""Clara plugins (invoices, reminders, MCP bridge) live here; the plugin API arrives with issue #5."""
