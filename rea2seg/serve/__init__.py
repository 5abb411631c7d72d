"""What the agent doors (MCP server, LangChain tools) share: checked inputs, one gate in front of the engine, answers
kept under ids for follow-up calls, allowed-directory checks and previews. Knows nothing of MCP or LangChain."""
