"""The MCP layer: the only code that imports the MCP SDK."""
