"""Rea2Seg's MCP server (official SDK, ``mcp >= 2.3``): run ``rea2seg-mcp --help``."""
