"""Small MCP servers the bridge tests run as child processes."""
