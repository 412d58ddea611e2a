"""What pyro's faces (the CLI and the MCP server) tell a user when a call fails."""
